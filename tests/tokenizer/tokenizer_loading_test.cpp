// The fast tokenizer.json loading path against plain references: the SAX reader against nlohmann's DOM
// parse of the same text, the flat spelling index against std::unordered_map, the lazily built Unicode flag table
// against the regexes run over every code point at once; and the hostile inputs the reader now sees first.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <map>
#include <random>
#include <unordered_map>

#include "core/error.h"
#include "core/mapped_file.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/regex.h"
#include "tokenizer/token_index.h"
#include "tokenizer/tokenizer_json_reader.h"
#include "tokenizer/unicode_flags.h"
#include "tokenizer/utf8.h"
#include "tokenizer_test_util.h"

namespace deepmoe {
namespace {

using json = nlohmann::json;

TEST(TokenizerJsonReader, SameContentAsTheDomParseOfTheRealFile) {
  const std::string text = read_text_file(test::tokenizer_dir() + "/tokenizer.json");
  json dom = json::parse(text);
  TokenizerJsonCollected collected;
  json read = read_tokenizer_json(text, collected);

  ASSERT_TRUE(collected.has_vocab);
  ASSERT_TRUE(collected.has_merges);
  EXPECT_FALSE(collected.vocab_problem);
  EXPECT_FALSE(collected.merges_problem);
  const json& vocab = dom["model"]["vocab"];
  ASSERT_EQ(collected.vocab_ids.size(), vocab.size());
  for (size_t i = 0; i < collected.vocab_ids.size(); ++i) {
    const std::string spelling(collected.vocab_spellings[i]);
    ASSERT_TRUE(vocab.contains(spelling)) << spelling;
    ASSERT_EQ(vocab[spelling].get<int32_t>(), collected.vocab_ids[i]) << spelling;
  }
  const json& merges = dom["model"]["merges"];
  ASSERT_EQ(collected.merge_count(), merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    // The file writes merges either as "left right" or as [left, right].
    const std::string expected = merges[i].is_string()
                                     ? merges[i].get<std::string>()
                                     : merges[i][0].get<std::string>() + " " + merges[i][1].get<std::string>();
    ASSERT_EQ(std::string(collected.merge_halves[2 * i]) + " " + std::string(collected.merge_halves[2 * i + 1]),
              expected)
        << i;
  }
  // Everything else is the same DOM; the collected members are left as empty placeholders.
  EXPECT_EQ(read["model"]["vocab"], json::object());
  EXPECT_EQ(read["model"]["merges"], json::array());
  dom["model"]["vocab"] = json::object();
  dom["model"]["merges"] = json::array();
  EXPECT_EQ(read, dom);
}

// A byte-level tokenizer of 256 byte tokens plus "ab" and "abc", written as raw text so member order and the
// merge forms can vary.
std::string tiny_text(const std::string& merges, bool vocab_first, const std::string& extra_vocab = "") {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_level::encode(std::string(1, static_cast<char>(b)))] = b;
  vocab["ab"] = 256;
  vocab["abc"] = 257;
  std::string v = vocab.dump();
  if (!extra_vocab.empty()) v = v.substr(0, v.size() - 1) + "," + extra_vocab + "}";
  const std::string m = "\"merges\":" + merges;
  const std::string members = vocab_first ? "\"vocab\":" + v + "," + m : m + ",\"vocab\":" + v;
  const std::string model = "{\"type\":\"BPE\"," + members + "}";
  return R"({"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"use_regex":true},)"
         R"("decoder":{"type":"ByteLevel"},"model":)" +
         model + "}";
}

std::string load_error(const std::string& text) {
  try {
    Tokenizer::from_json(text, "", "/m/tokenizer.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(TokenizerJsonReader, MergeFormsAndMemberOrderGiveTheSameTokenizer) {
  const std::vector<int32_t> expected = {257, ' ', 256, ' ', 'b', 'c', 'a'};
  for (const std::string merges : {R"(["a b","ab c"])", R"([["a","b"],["ab","c"]])", R"(["a b",["ab","c"]])"})
    for (bool vocab_first : {true, false}) {
      const auto tok = Tokenizer::from_json(tiny_text(merges, vocab_first));
      EXPECT_EQ(tok->encode("abc ab bca", false), expected) << merges << " vocab_first=" << vocab_first;
      EXPECT_EQ(tok->token_to_id("abc"), 257);
      EXPECT_EQ(tok->token_to_id("zzz"), -1);
    }
}

TEST(TokenizerJsonReader, HostileCollectedMembersAreNamedErrors) {
  const std::string ok = R"(["a b","ab c"])";
  const std::pair<std::string, std::string> cases[] = {
      {tiny_text(ok, true, R"("zz":{"id":5})"), R"(model.vocab["zz"]': expected an integer token id)"},
      {tiny_text(ok, true, R"("zz":[1])"), R"(model.vocab["zz"]': expected an integer token id)"},
      {tiny_text(ok, true, R"("zz":5.0)"), "expected an integer token id"},
      {tiny_text(ok, true, R"("zz":null)"), "expected an integer token id"},
      {tiny_text(ok, true, R"("zz":18446744073709551615)"), "token id 18446744073709551615 out of range"},
      {tiny_text(ok, true, R"("ab":300)"), R"(token "ab" is listed twice)"},
      {tiny_text(R"(["a b",["ab"]])", true), "model.merges[1]': expected \"left right\" or [left, right]"},
      {tiny_text(R"(["a b",["ab","c","d"]])", false), "model.merges[1]': expected \"left right\" or [left, right]"},
      {tiny_text(R"(["a b",["ab",["c"]]])", true), "model.merges[1]': expected \"left right\" or [left, right]"},
      {tiny_text(R"([{"a":"b"},"ab c"])", true), "model.merges[0]': expected \"left right\" or [left, right]"},
      {tiny_text(R"(["a b",7])", true), "model.merges[1]': expected \"left right\" or [left, right]"},
      {tiny_text(R"(["a b","ab  c"])", true), "model.merges[1]': expected \"left right\""},
      // Problems are reported in file order, with the lookups of earlier merges first.
      {tiny_text(R"(["qq r","abc"])", true), "model.merges[0]': merge \"qq r\" names a token not in the vocabulary"},
      {tiny_text(R"("a b")", true), "model.merges': expected an array"},
      {"", "malformed JSON"},
      {"{\"model\":", "malformed JSON"},
  };
  for (const auto& [text, needle] : cases) {
    const std::string err = load_error(text);
    EXPECT_NE(err.find(needle), std::string::npos) << needle << "\n  got: " << err;
    EXPECT_NE(err.find("/m/tokenizer.json"), std::string::npos) << err;
  }
}

// Seeded byte mutations and truncations of a valid tokenizer.json: each loads or is a deepmoe::Error, never a
// crash (run under ASan/UBSan too: build-asan).
TEST(TokenizerJsonReader, MutatedFilesLoadOrFailCleanly) {
  const std::string base = tiny_text(R"(["a b",["ab","c"]])", true, R"("<s>":258)");
  const std::string alphabet = "{}[]\",:0123456789-. ab\\";
  std::mt19937 rng(17);
  int loaded = 0, rejected = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string text = base;
    if (i % 10 == 0) {
      text.resize(rng() % text.size());
    } else {
      for (int k = 1 + int(rng() % 4); k > 0; --k) text[rng() % text.size()] = alphabet[rng() % alphabet.size()];
    }
    try {
      const auto tok = Tokenizer::from_json(text);
      tok->encode("abc ab", false);
      ++loaded;
    } catch (const Error&) {
      ++rejected;
    }
  }
  EXPECT_GT(loaded, 0);
  EXPECT_GT(rejected, 0);
}

TEST(TokenIndex, AgreesWithUnorderedMap) {
  std::mt19937 rng(5);
  std::unordered_map<std::string, int32_t> reference;
  TokenIndex index;
  auto random_key = [&] {
    std::string s(rng() % 6, '\0');  // short keys: many collisions of equal keys
    for (char& c : s) c = char('a' + rng() % 4);
    return s;
  };
  for (int i = 0; i < 20000; ++i) {
    const std::string key = random_key();
    const int32_t id = int32_t(rng() % 1000);
    if (rng() % 3 == 0) {
      index.insert_or_assign(key, id);
      reference[key] = id;
    } else {
      EXPECT_EQ(index.insert(key, id), reference.emplace(key, id).second) << key;
    }
    const std::string probe = random_key();
    const auto it = reference.find(probe);
    ASSERT_EQ(index.find(probe), it == reference.end() ? -1 : it->second) << probe;
  }
  EXPECT_EQ(index.size(), reference.size());
}

TEST(UnicodeFlags, LazyBlocksEqualTheRegexesOverEveryCodePoint) {
  // The reference: each property's regex run once over a string of all scalar values.
  std::string all;
  for (uint32_t cp = 0; cp < 0x110000; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    utf8::append(all, cp);
  }
  std::vector<uint16_t> expected(0x110000, 0);
  const std::pair<const char*, uint16_t> properties[] = {
      {R"(\p{L}+)", kUnicodeLetter},  {R"(\p{M}+)", kUnicodeMark},  {R"(\p{N}+)", kUnicodeNumber},
      {R"(\p{Nd}+)", kUnicodeDecimal}, {R"(\p{P}+)", kUnicodePunct}, {R"(\p{Pc}+)", kUnicodeConnector},
      {R"(\p{S}+)", kUnicodeSymbol},  {R"(\s+)", kUnicodeRegexSpace}};
  std::vector<std::pair<size_t, size_t>> matches;
  for (const auto& [pattern, flag] : properties) {
    matches.clear();
    Regex(pattern).find_all(all, matches);
    for (auto [b, e] : matches)
      for (size_t i = b; i < e;) {
        uint32_t cp = 0;
        i += utf8::decode(std::string_view(all).substr(i), &cp);
        expected[cp] |= flag;
      }
  }
  size_t letters = 0;
  for (uint32_t cp = 0; cp < 0x110000; ++cp) {
    ASSERT_EQ(unicode_flags(cp), expected[cp]) << std::hex << cp;
    letters += (expected[cp] & kUnicodeLetter) != 0;
  }
  EXPECT_GT(letters, 100000u);  // the reference itself is not empty
  EXPECT_EQ(unicode_flags(0x110000), 0);
  EXPECT_EQ(unicode_flags(0xD800), 0);
}

}  // namespace
}  // namespace deepmoe
