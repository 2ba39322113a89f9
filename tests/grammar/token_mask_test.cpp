// Masks over the DeepSeek-V3 vocabulary (129,280 ids with specials and padding) against the definition:
// token t is allowed iff its whole spelling can follow the current configuration (checked token by token
// on a separate automaton), EOS iff the grammar accepts, specials and padding never.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "grammar/gbnf_parser.h"
#include "grammar/grammar_matcher.h"
#include "grammar/json_schema_compiler.h"
#include "grammar/token_masker.h"
#include "tokenizer/tokenizer.h"

namespace deepmoe::grammar {
namespace {

constexpr int32_t kModelVocab = 129280;

struct Vocab {
  Vocab() {
    tokenizer = Tokenizer::load(std::string(DEEPMOE_TEST_ASSETS_DIR) + "/tokenizer");
    std::vector<std::string> spellings(kModelVocab);
    for (int32_t id = 0; id < tokenizer->vocab_size(); ++id)
      if (!tokenizer->is_special(id)) spellings[size_t(id)] = tokenizer->token_bytes(id);
    trie = std::make_shared<TokenTrie>(std::move(spellings), tokenizer->eos_id());
  }
  std::unique_ptr<Tokenizer> tokenizer;
  std::shared_ptr<const TokenTrie> trie;
};

Vocab& vocab() {
  static Vocab v;
  return v;
}

// Feeds `text` token by token (its canonical tokenization); at every step compares the mask with the
// brute-force definition on an independent automaton, then checks the text's own token is allowed.
// The masker's statistics go to `stats` (ASSERT_* needs a void function).
void check_masks_along(const Grammar& g, const std::string& text, int max_checked_steps, MaskStats* stats = nullptr) {
  Vocab& v = vocab();
  auto automaton = std::make_shared<PushdownAutomaton>(g);
  auto masker = std::make_shared<TokenMasker>(automaton, v.trie);
  GrammarMatcher m(automaton, masker);
  PushdownAutomaton reference(g);
  reference.set_share_byte_classes(false);  // the plain definition, one byte at a time
  auto ref_config = reference.initial();
  std::vector<int32_t> ids = v.tokenizer->encode(text, false, false);
  TokenBitmask mask(mask_words(kModelVocab));
  for (size_t step = 0; step <= ids.size(); ++step) {
    m.fill_mask(mask);
    if (int(step) < max_checked_steps || step == ids.size()) {
      size_t allowed = 0;
      for (int32_t id = 0; id < kModelVocab; ++id) {
        bool expect;
        if (id == v.trie->eos_id()) expect = reference.accepts(ref_config);
        else if (v.trie->spelling(id).empty()) expect = false;
        else {
          auto c = ref_config;
          for (char ch : v.trie->spelling(id)) {
            c = reference.step(c, uint8_t(ch));
            if (c == PushdownAutomaton::kDead) break;
          }
          expect = c != PushdownAutomaton::kDead;
        }
        allowed += expect;
        ASSERT_EQ(mask_test(mask, id), expect) << "token " << id << " '" << v.trie->spelling(id) << "' at step "
                                               << step << " of " << text;
      }
      EXPECT_GT(allowed, 0u);
    }
    if (step == ids.size()) break;
    ASSERT_TRUE(mask_test(mask, ids[step])) << "own token " << ids[step] << " at step " << step;
    ASSERT_TRUE(m.accept_token(ids[step]));
    for (char ch : v.trie->spelling(ids[step])) ref_config = reference.step(ref_config, uint8_t(ch));
  }
  EXPECT_TRUE(mask_test(mask, v.trie->eos_id()));
  EXPECT_TRUE(m.accept_token(v.trie->eos_id()));
  EXPECT_TRUE(m.is_terminated());
  if (stats) *stats = masker->stats();
}

TEST(TokenMask, ObjectSchemaMatchesBruteForce) {
  Grammar g = compile_json_schema(R"({"type":"object","properties":{"name":{"type":"string","maxLength":40},
      "tags":{"type":"array","items":{"type":"string"}},"age":{"type":"integer","minimum":0,"maximum":150},
      "ok":{"type":"boolean"}},"required":["name","age"]})");
  check_masks_along(g, R"({"name":"Ada \"Countess\" Lovelace","tags":["math","poetry\n"],"age":36,"ok":true})", 12);
}

// Every mask along the way, in the states whose tables take shortcuts: strings bounded by maxLength (a run of
// plain text proved a counter step at a time), unbounded strings (a loop), additional-property keys next to
// declared names, formats, patterns, enums, nested arrays of short strings, non-ASCII text and escapes.
TEST(TokenMask, BoundedStringsKeysAndFormatsMatchBruteForceAtEveryStep) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"type":"object","properties":{"title":{"type":"string","maxLength":64},
          "tags":{"type":"array","items":{"type":"string","maxLength":3}},"note":{"type":"string"}},
          "required":["title"]})",
       R"({"title":"The quick brown fox jumps over the lazy dog, 東京 and Zoë","tags":["東京","x",""],)"
       R"("note":"a \"quoted\" word\n","extra key":{"a":[1,"b"]},"tit":"le"})"},
      {R"({"type":"object","properties":{"url":{"type":"string","format":"uri"},"email":{"type":"string",
          "format":"email"},"when":{"type":"string","format":"date-time"},"id":{"type":"string","format":"uuid"},
          "state":{"enum":["draft","active"]},"code":{"type":"string","pattern":"^[A-Z]{2}-[0-9]+$"}},
          "additionalProperties":false})",
       R"({"url":"https://example.org/a/b?q=1","email":"ada@example.org","when":"2024-05-17T10:20:30Z",)"
       R"("id":"123e4567-e89b-12d3-a456-426614174000","state":"active","code":"AB-12"})"},
      {R"({"type":"array","items":{"type":"string","minLength":2,"maxLength":5},"maxItems":4})",
       R"(["ab","東京都","héllo","  "])"},
  };
  for (const auto& [schema, text] : cases) check_masks_along(compile_json_schema(schema), text, 1000);
}

// Tables found in the vocabulary's shared tables (built for another grammar with the same piece: the same
// string bounds and date format, in a different place) give the same masks as the definition; the patterns'
// letter ranges and the enums differ in one letter and the bounds by one, so a key that left out byte sets or
// rule shapes would hand this grammar the other's table.
TEST(TokenMask, TablesSharedBetweenGrammarsMatchBruteForce) {
  check_masks_along(compile_json_schema(R"({"type":"object","properties":{"name":{"type":"string","maxLength":5},
      "state":{"enum":["on","of"]},"when":{"type":"string","format":"date"},
      "code":{"type":"string","pattern":"^[a-m]+$"}},"additionalProperties":false})"),
                    R"({"name":"ab","state":"of","when":"2024-05-17","code":"label"})", 1000);
  MaskStats stats;
  check_masks_along(compile_json_schema(R"({"type":"array","items":{"type":"object","properties":{
      "label":{"type":"string","maxLength":6},"state":{"enum":["on","ox"]},"when":{"type":"string","format":"date"},
      "code":{"type":"string","pattern":"^[a-n]+$"}}}})"),
                    R"([{"label":"abc","state":"ox","when":"2024-05-17","code":"man"},{"state":"on"}])", 1000, &stats);
  EXPECT_GT(stats.shared_tables_found, 0u);
  EXPECT_LT(stats.shared_tables_found, stats.position_tables);
}

TEST(TokenMask, AnyJsonMatchesBruteForce) {
  check_masks_along(any_json_grammar(), R"({"a":[1,-2.5e3,{"b":null}],"c":"日本語 text","d":false})", 10);
}

TEST(TokenMask, GbnfMatchesBruteForce) {
  Grammar g = parse_gbnf("root ::= (\"SELECT \" [a-z_]+ (\", \" [a-z_]+)* \" FROM \" [a-z]+ \";\\n\")+\n");
  check_masks_along(g, "SELECT id, user_name FROM users;\nSELECT x FROM t;\n", 8);
}

TEST(TokenMask, RollbackRestoresTheMask) {
  Vocab& v = vocab();
  auto automaton = std::make_shared<PushdownAutomaton>(any_json_grammar());
  auto masker = std::make_shared<TokenMasker>(automaton, v.trie);
  GrammarMatcher m(automaton, masker);
  std::vector<int32_t> ids = v.tokenizer->encode(R"({"key":[1,2,3]})", false, false);
  TokenBitmask before(mask_words(kModelVocab)), after(mask_words(kModelVocab));
  ASSERT_TRUE(m.accept_token(ids[0]));
  m.fill_mask(before);
  for (size_t i = 1; i < ids.size(); ++i) ASSERT_TRUE(m.accept_token(ids[i]));
  m.rollback(ids.size() - 1);
  m.fill_mask(after);
  EXPECT_EQ(before, after);
  EXPECT_EQ(m.steps(), 1u);
}

TEST(TokenMask, ForcedTokenWhenOnlyOneFits) {
  Vocab& v = vocab();
  // A grammar that allows only one spelling, and that spelling is one token: it is forced.
  int32_t id = v.tokenizer->encode("hello", false, false).at(0);
  std::string spelling = v.trie->spelling(id);
  auto automaton = std::make_shared<PushdownAutomaton>(parse_gbnf("root ::= \"" + spelling + "\"\n"));
  GrammarMatcher m(automaton, std::make_shared<TokenMasker>(automaton, v.trie));
  TokenBitmask scratch(mask_words(kModelVocab));
  EXPECT_EQ(m.forced_token(scratch), -1);  // "h", "he", "hel"... also fit
  EXPECT_EQ(m.forced_bytes(), spelling);
  ASSERT_TRUE(m.accept_token(id));
  EXPECT_EQ(m.forced_token(scratch), v.trie->eos_id());
}

}  // namespace
}  // namespace deepmoe::grammar
