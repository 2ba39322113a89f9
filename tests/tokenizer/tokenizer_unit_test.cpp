// Unit tests of the tokenizer pieces: invalid UTF-8 handling, BPE merge loop vs its plain-loop reference,
// the streaming detokenizer's properties, special-token parsing, added-token flags, Split behaviors, and
// named errors for hostile tokenizer.json files.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <random>
#include <sstream>
#include <unordered_map>

#include "core/error.h"
#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe_model.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/utf8.h"
#include "tokenizer_test_util.h"

namespace deepmoe {
namespace {

using json = nlohmann::json;

std::vector<std::string> golden_texts() {
  std::ifstream in(test::golden_dir() + "/tokenizer_deepseek_v3.jsonl");
  std::vector<std::string> texts;
  std::string line;
  while (std::getline(in, line)) texts.push_back(json::parse(line)["text"].get<std::string>());
  return texts;
}

// --- invalid UTF-8 ---------------------------------------------------------------------------------------------

TEST(Utf8, RepairMatchesPythonErrorsReplace) {
  // Expected values: bytes.decode("utf-8", errors="replace") in CPython 3.
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(utf8::repair("a\xE2\x82" "b"), "a" + r + "b");
  EXPECT_EQ(utf8::repair("\xF0\x9F\x98"), r);
  EXPECT_EQ(utf8::repair("\xED\xA0\x80"), r + r + r);  // a surrogate is three errors
  EXPECT_EQ(utf8::repair("\xC0\xAF"), r + r);          // overlong
  EXPECT_EQ(utf8::repair("\xFF"), r);
  EXPECT_EQ(utf8::repair("\xF4\x90\x80\x80"), r + r + r + r);  // above U+10FFFF
  EXPECT_EQ(utf8::repair("\xE2\x82\xAC\x80"), "\xE2\x82\xAC" + r);
  EXPECT_EQ(utf8::repair("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");
}

TEST(Utf8, IncompleteTail) {
  EXPECT_EQ(utf8::incomplete_tail("ab\xE2\x82"), 2u);
  EXPECT_EQ(utf8::incomplete_tail("\xF0\x9F\x98"), 3u);
  EXPECT_EQ(utf8::incomplete_tail("\xE2\x82\xAC"), 0u);
  EXPECT_EQ(utf8::incomplete_tail("a\x82"), 0u);     // stray continuation: already an error
  EXPECT_EQ(utf8::incomplete_tail("\xED\xA0"), 0u);  // can never complete
  EXPECT_EQ(utf8::incomplete_tail(""), 0u);
}

TEST(Tokenizer, InvalidUtf8IsEncodedAsItsReplacement) {
  const Tokenizer& tok = test::deepseek_tokenizer();
  const std::string inputs[] = {"caf\xC3", "\xFF\xFEhello", "a\xE2\x82" "b", "\xED\xA0\x80x", "ok\xF0\x9F\x98"};
  for (const std::string& s : inputs) {
    EXPECT_EQ(tok.encode(s, false), tok.encode(utf8::repair(s), false));
    EXPECT_EQ(tok.decode(tok.encode(s, false)), utf8::repair(s));
  }
}

TEST(Tokenizer, RandomBytesNeverCrashAndRoundTripTheirRepair) {
  const Tokenizer& tok = test::deepseek_tokenizer();
  std::mt19937 rng(7);
  for (int iter = 0; iter < 300; ++iter) {
    std::string s(rng() % 64, '\0');
    for (char& c : s) c = static_cast<char>(rng() % 256);
    auto ids = tok.encode(s, false);
    EXPECT_EQ(tok.decode(ids), utf8::repair(s));
  }
}

// --- BPE --------------------------------------------------------------------------------------------------------

// The real DeepSeek-V3 vocabulary and merges, loaded straight from tokenizer.json.
const BpeModel& deepseek_bpe() {
  static std::unique_ptr<BpeModel> model = [] {
    std::ifstream in(test::tokenizer_dir() + "/tokenizer.json");
    json j = json::parse(in);
    std::unordered_map<std::string, int32_t> vocab;
    for (auto it = j["model"]["vocab"].begin(); it != j["model"]["vocab"].end(); ++it)
      vocab.emplace(it.key(), it.value().get<int32_t>());
    std::vector<BpeModel::Merge> merges;
    for (const auto& m : j["model"]["merges"]) {
      std::string s = m.get<std::string>();
      size_t sp = s.find(' ');
      std::string a = s.substr(0, sp), b = s.substr(sp + 1);
      merges.push_back({vocab.at(a), vocab.at(b), vocab.at(a + b)});
    }
    TokenIndex index;
    for (const auto& [spelling, id] : vocab) index.insert(spelling, id);
    return std::make_unique<BpeModel>(index, merges, false);
  }();
  return *model;
}

TEST(Bpe, MergeLoopMatchesPlainLoopReference) {
  const BpeModel& bpe = deepseek_bpe();
  auto texts = golden_texts();
  std::mt19937 rng(11);
  int checked = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    const std::string& t = texts[rng() % texts.size()];
    if (t.empty()) continue;
    size_t begin = rng() % t.size();
    size_t len = 1 + rng() % 200;  // covers both the small-piece scan and the heap path (> 64 bytes)
    std::string piece = t.substr(begin, len);
    std::vector<int32_t> fast, ref;
    bpe.encode_piece(piece, fast);
    bpe.encode_piece_ref(piece, ref);
    ASSERT_EQ(fast, ref) << json(utf8::repair(piece)).dump();
    ++checked;
  }
  EXPECT_GT(checked, 2900);
  // Repetitive pieces, where equal-rank merges overlap.
  for (std::string unit : {"a", "ab", " ", "==", "\xE4\xBD\xA0"}) {
    for (int n : {2, 3, 63, 64, 65, 130, 400}) {
      std::string piece;
      for (int i = 0; i < n; ++i) piece += unit;
      std::vector<int32_t> fast, ref;
      bpe.encode_piece(piece, fast);
      bpe.encode_piece_ref(piece, ref);
      ASSERT_EQ(fast, ref) << unit << " x " << n;
    }
  }
}

TEST(Tokenizer, HugeInputsEncodeAndRoundTrip) {
  const Tokenizer& tok = test::deepseek_tokenizer();
  for (std::string unit : {"a", " ", "\n", "9", "\xE4\xBD\xA0", "!"}) {
    std::string s;
    for (int i = 0; i < 100000; ++i) s += unit;
    auto ids = tok.encode(s, false);
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(tok.decode(ids), s);
  }
}

// --- streaming detokenizer --------------------------------------------------------------------------------------

TEST(StreamingDetokenizer, ChunksAreValidAndConcatenateToDecode) {
  const Tokenizer& tok = test::deepseek_tokenizer();
  auto texts = golden_texts();
  std::mt19937 rng(3);
  auto check = [&](const std::vector<int32_t>& ids) {
    StreamingDetokenizer stream(tok);
    std::string all;
    for (int32_t id : ids) {
      std::string chunk = stream.push(id);
      ASSERT_TRUE(utf8::is_valid(chunk));
      all += chunk;
    }
    std::string tail = stream.flush();
    ASSERT_TRUE(utf8::is_valid(tail));
    all += tail;
    ASSERT_EQ(all, tok.decode(ids));
  };
  for (size_t i = 0; i < texts.size(); i += 3) check(tok.encode(texts[i], false));
  // Random ids, including single-byte tokens that split and break UTF-8 sequences and ids with no token.
  for (int iter = 0; iter < 500; ++iter) {
    std::vector<int32_t> ids(1 + rng() % 20);
    for (int32_t& id : ids) id = (rng() % 2) ? static_cast<int32_t>(rng() % 300) : static_cast<int32_t>(rng() % 129300);
    check(ids);
  }
}

TEST(StreamingDetokenizer, HoldsSplitCharactersUntilComplete) {
  const Tokenizer& tok = test::deepseek_tokenizer();
  // "😀" = F0 9F 98 80; feed it one single-byte token at a time.
  auto byte_id = [&](uint8_t b) { return tok.token_to_id(byte_level::encode(std::string(1, static_cast<char>(b)))); };
  StreamingDetokenizer stream(tok);
  EXPECT_EQ(stream.push(byte_id(0xF0)), "");
  EXPECT_EQ(stream.push(byte_id(0x9F)), "");
  EXPECT_EQ(stream.push(byte_id(0x98)), "");
  EXPECT_EQ(stream.push(byte_id(0x80)), "\xF0\x9F\x98\x80");
  // A broken sequence is replaced as soon as it can no longer complete.
  EXPECT_EQ(stream.push(byte_id(0xE2)), "");
  EXPECT_EQ(stream.push(byte_id('a')), "\xEF\xBF\xBD" "a");
  EXPECT_EQ(stream.push(byte_id(0xE2)), "");
  EXPECT_EQ(stream.flush(), "\xEF\xBF\xBD");
}

// --- special and added tokens -----------------------------------------------------------------------------------

TEST(Tokenizer, SpecialTokensAndBos) {
  const Tokenizer& tok = test::deepseek_tokenizer();
  EXPECT_EQ(tok.vocab_size(), 128815);
  EXPECT_EQ(tok.bos_id(), 0);
  EXPECT_EQ(tok.eos_id(), 1);
  EXPECT_TRUE(tok.add_bos());
  EXPECT_FALSE(tok.add_eos());
  EXPECT_TRUE(tok.is_special(0));
  EXPECT_FALSE(tok.is_special(128803));  // <｜User｜> is an added but not special token
  EXPECT_EQ(tok.token_piece(2058), "Ġworld");
  EXPECT_EQ(tok.token_bytes(2058), " world");
  EXPECT_EQ(tok.token_to_id("<｜Assistant｜>"), 128804);
  // splintr's DeepSeek-V3 vector (reference §7).
  EXPECT_EQ(tok.encode("<｜User｜>Hello!<｜Assistant｜>Hi there!<|EOT|>", false),
            (std::vector<int32_t>{128803, 19923, 3, 128804, 23166, 1031, 3, 128805}));
  EXPECT_EQ(tok.encode("Hello", true), (std::vector<int32_t>{0, 19923}));
}

TEST(Tokenizer, ParseSpecialOffEncodesSpecialTokensAsText) {
  const Tokenizer& tok = test::deepseek_tokenizer();
  const std::string text = "<｜end▁of▁sentence｜>x<｜User｜>";
  EXPECT_EQ(tok.encode(text, false, true), (std::vector<int32_t>{1, 90, 128803}));
  auto plain = tok.encode(text, false, false);
  // The special token becomes ordinary BPE tokens; the non-special added token is still matched (as HF's
  // encode_special_tokens does).
  EXPECT_GT(plain.size(), 3u);
  EXPECT_EQ(plain.back(), 128803);
  for (int32_t id : plain) EXPECT_NE(id, 1);
  EXPECT_EQ(tok.decode(plain), text);
  // skip_special drops special tokens only.
  EXPECT_EQ(tok.decode(std::vector<int32_t>{0, 19923, 128803, 1}, true), "Hello<｜User｜>");
  // Ids with no token (padding past the vocabulary, negative) decode to nothing.
  EXPECT_EQ(tok.decode(std::vector<int32_t>{19923, 129000, -5}), "Hello");
}

std::vector<std::string> matched(const AddedTokenMatcher& m, const std::string& text, bool parse_special = true) {
  std::vector<AddedTokenMatcher::Segment> segs;
  m.split(text, parse_special, segs);
  std::vector<std::string> out;
  for (const auto& s : segs) {
    std::string item(s.id >= 0 ? 1 : 0, '#');  // '#' marks an added-token match
    item.append(text, s.begin, s.end - s.begin);
    out.push_back(item);
  }
  return out;
}

TEST(AddedTokens, FlagsFollowHf) {
  // Cases from HF tokenizers' added_vocabulary.rs tests (without their lowercase normalizer).
  AddedToken mask;
  mask.id = 0;
  mask.content = "<mask>";
  mask.single_word = true;
  AddedTokenMatcher single({mask});
  EXPECT_EQ(matched(single, "<mask> My name <mask> A<mask> <mask>ony <mask>"),
            (std::vector<std::string>{"#<mask>", " My name ", "#<mask>", " A<mask> <mask>ony ", "#<mask>"}));
  EXPECT_EQ(matched(single, "<mask>, <mask>- \xE2\x97\x8C\xCC\xB0<mask>"),  // a combining mark is a word char
            (std::vector<std::string>{"#<mask>", ", ", "#<mask>", "- \xE2\x97\x8C\xCC\xB0<mask>"}));

  mask.lstrip = mask.rstrip = true;
  AddedTokenMatcher strip({mask});
  EXPECT_EQ(matched(strip, "Hi <mask> there\t<mask>\t<mask>\xE2\x80\x80"),
            (std::vector<std::string>{"Hi", "# <mask> ", "there", "#\t<mask>\t", "#<mask>\xE2\x80\x80"}));

  // Leftmost-longest; non-normalized tokens are matched first; special ones skipped without parse_special.
  AddedToken a{1, "ab", false, false, false, false, true};
  AddedToken abc{2, "abc", true, false, false, false, false};
  AddedToken b{3, "bcd", false, false, false, false, true};
  AddedTokenMatcher m({a, abc, b});
  EXPECT_EQ(matched(m, "xabcd"), (std::vector<std::string>{"x", "#abc", "d"}));
  EXPECT_EQ(matched(m, "xabcd", false), (std::vector<std::string>{"x", "#ab", "cd"}));
}

// --- pre-tokenizer ----------------------------------------------------------------------------------------------

std::vector<std::string> split_with(SplitBehavior behavior, const std::string& text) {
  std::vector<std::unique_ptr<PreTokenizerStep>> steps;
  steps.push_back(std::make_unique<SplitStep>("-", true, behavior, false));
  SequencePreTokenizer pre(std::move(steps));
  std::vector<Span> spans;
  pre.split(text, spans);
  std::vector<std::string> out;
  for (Span s : spans) out.push_back(text.substr(s.begin, s.end - s.begin));
  return out;
}

TEST(PreTokenizer, SplitBehaviorsAsDocumentedByHf) {
  // The example of HF's Split docs: "the-final--countdown" split on "-".
  using V = std::vector<std::string>;
  const std::string t = "the-final--countdown";
  EXPECT_EQ(split_with(SplitBehavior::kRemoved, t), (V{"the", "final", "countdown"}));
  EXPECT_EQ(split_with(SplitBehavior::kIsolated, t), (V{"the", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(split_with(SplitBehavior::kMergedWithPrevious, t), (V{"the-", "final-", "-", "countdown"}));
  EXPECT_EQ(split_with(SplitBehavior::kMergedWithNext, t), (V{"the", "-final", "-", "-countdown"}));
  EXPECT_EQ(split_with(SplitBehavior::kContiguous, t), (V{"the", "-", "final", "--", "countdown"}));
}

// --- hostile tokenizer.json -------------------------------------------------------------------------------------

// A minimal valid byte-level tokenizer: 256 byte tokens, one merge "a b" -> "ab".
json tiny_tokenizer() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_level::encode(std::string(1, static_cast<char>(b)))] = b;
  vocab["ab"] = 256;
  return json{{"version", "1.0"},
              {"truncation", nullptr},
              {"padding", nullptr},
              {"added_tokens", json::array({{{"id", 257}, {"content", "<s>"}, {"special", true}}})},
              {"normalizer", nullptr},
              {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
              {"post_processor", nullptr},
              {"decoder", {{"type", "ByteLevel"}}},
              {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array({"a b"})}}}};
}

std::string load_error(const json& j, const std::string& config = "") {
  try {
    Tokenizer::from_json(j.dump(), config, "/m/tokenizer.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(TokenizerJson, TinyTokenizerWorks) {
  auto tok = Tokenizer::from_json(tiny_tokenizer().dump(), R"({"bos_token": "<s>", "add_bos_token": true})");
  EXPECT_EQ(tok->encode("ab abc", true), (std::vector<int32_t>{257, 256, ' ', 256, 'c'}));
  EXPECT_EQ(tok->decode(tok->encode("ab abc<s>", false)), "ab abc<s>");
}

TEST(TokenizerJson, HostileFilesAreNamedErrors) {
  auto with = [](auto mutate) {
    json j = tiny_tokenizer();
    mutate(j);
    return j;
  };
  auto expect = [](const std::string& err, const std::string& needle,
                   const std::string& file = "/m/tokenizer.json") {
    EXPECT_NE(err.find(needle), std::string::npos) << err;
    EXPECT_NE(err.find(file), std::string::npos) << err;
  };
  expect(load_error(with([](json& j) { j["model"]["vocab"]["zz"] = -1; })), "token id -1 out of range");
  expect(load_error(with([](json& j) { j["model"]["vocab"]["zz"] = 1LL << 40; })), "out of range");
  expect(load_error(with([](json& j) { j["model"]["vocab"]["zz"] = "7"; })), "expected an integer token id");
  expect(load_error(with([](json& j) { j["model"]["vocab"]["zz"] = 5; })), "id 5 is used twice");
  expect(load_error(with([](json& j) { j["model"]["merges"].push_back("q zz"); })), "not in the vocabulary");
  expect(load_error(with([](json& j) { j["model"]["merges"].push_back("a c"); })), "merge result \"ac\"");
  expect(load_error(with([](json& j) { j["model"]["merges"].push_back("abc"); })), "model.merges[1]");
  expect(load_error(with([](json& j) { j["model"]["vocab"].erase("z"); })), "no token for byte 122");
  expect(load_error(with([](json& j) { j["model"]["type"] = "WordPiece"; })), "unsupported model \"WordPiece\"");
  expect(load_error(with([](json& j) { j["model"]["byte_fallback"] = true; })), "byte_fallback");
  expect(load_error(with([](json& j) { j["normalizer"] = {{"type", "NFC"}}; })), "unsupported normalizer \"NFC\"");
  expect(load_error(with([](json& j) { j["pre_tokenizer"] = {{"type", "Whitespace"}}; })),
         "unsupported pre-tokenizer \"Whitespace\"");
  expect(load_error(with([](json& j) {
           j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
         })),
         "regex does not compile");
  expect(load_error(with([](json& j) {
           j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "x"}}}, {"behavior", "Sideways"}};
         })),
         "unsupported Split behavior \"Sideways\"");
  expect(load_error(with([](json& j) { j["decoder"] = {{"type", "WordPiece"}}; })), "unsupported decoder");
  expect(load_error(with([](json& j) { j["truncation"] = {{"max_length", 5}}; })), "truncation is not supported");
  expect(load_error(with([](json& j) { j["added_tokens"][0]["id"] = -3; })), "added_tokens[0].id");
  expect(load_error(with([](json& j) { j["added_tokens"][0]["content"] = 5; })), "added_tokens[0].content");
  expect(load_error(with([](json& j) { j["model"] = json::array(); })), "missing model");
  expect(load_error(tiny_tokenizer(), R"({"bos_token": "<nope>"})"), "token \"<nope>\" is not in the vocabulary",
         "/m/tokenizer_config.json");
  try {
    Tokenizer::from_json(R"({"model": {"vocab": {)", "", "/m/tokenizer.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("malformed JSON"), std::string::npos);
  }
  EXPECT_THROW(Tokenizer::load("/nonexistent-model-dir"), Error);
}

}  // namespace
}  // namespace deepmoe
