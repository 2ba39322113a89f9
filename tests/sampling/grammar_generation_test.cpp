// Grammar-constrained generation through the real generation loops (plain and speculative) over the bundled
// DeepSeek-V3 tokenizer (129k ids), with a model whose logits are a hash of the token history: every output must
// be in the grammar's language and end with EOS once the grammar is complete, forced text must be taken
// without sampling in canonical tokens, and speculative drafts must never leave the grammar state behind.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <tuple>

#include "grammar/gbnf_parser.h"
#include "grammar/grammar_matcher.h"
#include "grammar/json_schema_compiler.h"
#include "runtime/generator.h"
#include "runtime/grammar_constraint.h"
#include "runtime/speculative_generator.h"
#include "runtime/token_healing.h"

namespace deepmoe {
namespace {

const Tokenizer& tok() {
  static const std::unique_ptr<Tokenizer> t = Tokenizer::load(DEEPMOE_TEST_ASSETS_DIR "/tokenizer");
  return *t;
}

uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

class TestSequence : public LmSequence {
 protected:
  void truncate_cache(int64_t) override {}
};

// Logits in [0, 8) from a hash of the whole token history; the draft model sees the same history with noise
// added, so some drafts are rejected.
class HashLm : public SpeculativeLm {
 public:
  explicit HashLm(float draft_noise = 0.0f) : draft_noise_(draft_noise) {}
  int64_t forward_calls = 0;
  int64_t forwarded_tokens = 0;

  int64_t vocab_size() const override { return tok().vocab_size() + 64; }  // padded past the tokenizer
  int64_t context_length() const override { return 4096; }
  std::vector<int32_t> eos_token_ids() const override { return {tok().eos_id()}; }
  std::unique_ptr<LmSequence> new_sequence() override { return std::make_unique<TestSequence>(); }

  std::vector<float> draft(LmSequence& seq, int32_t next) override {
    draft_history_ = seq.tokens();
    draft_history_.push_back(next);
    return noisy(logits_after(draft_history_));
  }
  std::vector<float> draft_more(LmSequence&, int32_t token) override {
    draft_history_.push_back(token);
    return noisy(logits_after(draft_history_));
  }

 protected:
  std::vector<float> forward_rows_tokens(LmSequence& seq, std::span<const int32_t> tokens, size_t rows) override {
    ++forward_calls;
    forwarded_tokens += int64_t(tokens.size());
    std::vector<int32_t> history = seq.tokens();
    std::vector<float> out;
    for (size_t i = 0; i < tokens.size(); ++i) {
      history.push_back(tokens[i]);
      if (i + rows >= tokens.size()) {
        const std::vector<float> l = logits_after(history);
        out.insert(out.end(), l.begin(), l.end());
      }
    }
    return out;
  }

 private:
  std::vector<float> logits_after(const std::vector<int32_t>& history) const {
    uint64_t h = 1469598103934665603ull;
    for (int32_t t : history) h = mix(h ^ uint64_t(uint32_t(t)));
    std::vector<float> logits(static_cast<size_t>(vocab_size()));
    for (size_t i = 0; i < logits.size(); ++i) logits[i] = float(mix(h + i) % 1000) / 125.0f;
    return logits;
  }
  std::vector<float> noisy(std::vector<float> logits) const {
    if (draft_noise_ == 0.0f) return logits;
    uint64_t h = 7;
    for (int32_t t : draft_history_) h = mix(h ^ uint64_t(uint32_t(t)));
    for (size_t i = 0; i < logits.size(); ++i) logits[i] += draft_noise_ * float(mix(h + i) % 1000) / 1000.0f;
    return logits;
  }
  float draft_noise_;
  std::vector<int32_t> draft_history_;
};

std::shared_ptr<const grammar::Grammar> schema(const std::string& json) {
  return std::make_shared<grammar::Grammar>(grammar::compile_json_schema(json));
}

bool in_language(const grammar::Grammar& g, const std::string& text) {
  grammar::GrammarMatcher m(std::make_shared<grammar::PushdownAutomaton>(g));
  return m.accept_bytes(text) && m.is_accepted();
}

GenerationRequest request(std::shared_ptr<const grammar::Grammar> g, uint64_t seed, double temperature = 1.0) {
  GenerationRequest r;
  r.prompt = tok().encode("Reply in JSON:", true, false);
  r.max_tokens = 400;
  r.sampling.temperature = temperature;
  r.sampling.seed = seed;
  r.grammar = std::move(g);
  return r;
}

std::vector<int32_t> ids(const RequestState& s) {
  std::vector<int32_t> out;
  for (const auto& t : s.tokens) out.push_back(t.token);
  return out;
}

const std::vector<std::string>& schemas() {
  static const std::vector<std::string> s = {
      R"({"type":"object","properties":{"name":{"type":"string","maxLength":6},"age":{"type":"integer","minimum":0,"maximum":120}},"required":["name","age"],"additionalProperties":false})",
      R"({"type":"array","items":{"enum":["red","green","blue"]},"minItems":1,"maxItems":4})",
      R"({"type":"object","properties":{"ok":{"type":"boolean"},"tags":{"type":"array","items":{"type":"string","maxLength":3},"maxItems":2}},"required":["ok","tags"],"additionalProperties":false})",
      R"({"anyOf":[{"type":"integer","minimum":10,"maximum":99},{"const":"none"}]})",
      R"({"type":"string","format":"date"})",
  };
  return s;
}

// Runs of forced tokens (EOS aside) that are not the tokenizer's own tokenization of their text.
int non_canonical_forced_runs(const RequestState& s, int* runs) {
  int bad = 0;
  for (size_t i = 0; i < s.tokens.size();) {
    if (!s.tokens[i].forced || s.tokens[i].token == tok().eos_id()) {
      ++i;
      continue;
    }
    std::vector<int32_t> run;
    for (; i < s.tokens.size() && s.tokens[i].forced && s.tokens[i].token != tok().eos_id(); ++i)
      run.push_back(s.tokens[i].token);
    std::string text;
    for (int32_t id : run) text += tok().token_bytes(id);
    ++*runs;
    bad += tok().encode(text, false, false) != run;
  }
  return bad;
}

TEST(GrammarGeneration, SampledOutputsAreInTheLanguageAndEndWithEos) {
  HashLm lm;
  Generator g(lm, tok());
  int64_t forced = 0;
  int runs = 0, non_canonical = 0;
  for (const std::string& s : schemas()) {
    const auto grammar = schema(s);
    for (uint64_t seed = 1; seed <= 6; ++seed) {
      auto seq = lm.new_sequence();
      std::string streamed;
      auto state = g.generate(request(grammar, seed), *seq, [&](std::string_view p) { streamed += p; });
      SCOPED_TRACE(s + " seed " + std::to_string(seed) + ": " + state->text);
      EXPECT_EQ(state->finish, FinishReason::Eos);
      EXPECT_EQ(state->tokens.back().token, tok().eos_id());
      EXPECT_EQ(streamed, state->text);
      EXPECT_TRUE(in_language(*grammar, state->text));
      EXPECT_FALSE(nlohmann::json::parse(state->text, nullptr, false).is_discarded());
      forced += state->stats.forced_tokens;
      non_canonical += non_canonical_forced_runs(*state, &runs);
    }
  }
  EXPECT_GT(forced, 0);
  // Fast-forwarded text is spelled in canonical tokens.
  EXPECT_GT(runs, 20);
  EXPECT_EQ(non_canonical, 0);
  std::printf("forced runs %d, non-canonical %d, forced tokens %lld\n", runs, non_canonical, (long long)forced);
}

TEST(GrammarGeneration, GbnfAndAnyJson) {
  HashLm lm;
  Generator g(lm, tok());
  const auto gbnf = std::make_shared<grammar::Grammar>(grammar::parse_gbnf(R"(root ::= ("yes" | "no") " " [0-9]{1,3})"));
  const auto any = std::make_shared<grammar::Grammar>(grammar::any_json_grammar());
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    auto seq = lm.new_sequence();
    auto a = g.generate(request(gbnf, seed), *seq, {});
    EXPECT_EQ(a->finish, FinishReason::Eos) << a->text;
    EXPECT_TRUE(in_language(*gbnf, a->text)) << a->text;
    GenerationRequest r = request(any, seed);
    r.max_tokens = 2000;
    auto seq2 = lm.new_sequence();
    auto b = g.generate(std::move(r), *seq2, {});
    if (b->finish == FinishReason::Eos) {
      // (Not parsed with nlohmann::json here: random digits make numbers past the double range.)
      EXPECT_TRUE(in_language(*any, b->text)) << b->text;
    } else {
      // Cut off by max_tokens: still a prefix of the language.
      EXPECT_EQ(b->finish, FinishReason::MaxTokens);
      grammar::GrammarMatcher m(std::make_shared<grammar::PushdownAutomaton>(*any));
      EXPECT_TRUE(m.accept_bytes(b->text)) << b->text;
    }
  }
}

TEST(GrammarGeneration, FullyForcedOutputNeedsOnlyThePrefill) {
  HashLm lm;
  Generator g(lm, tok());
  auto seq = lm.new_sequence();
  auto state = g.generate(request(schema(R"({"const":{"status":"accepted","id":12345}})"), 3), *seq, {});
  EXPECT_EQ(state->text, R"({"status":"accepted","id":12345})");
  EXPECT_EQ(state->finish, FinishReason::Eos);
  // The first token is sampled from the prefill's logits (its mask allows only the forced prefixes); the rest,
  // EOS included, is forced without another forward.
  EXPECT_EQ(lm.forward_calls, 1);
  EXPECT_EQ(state->stats.forced_tokens, state->stats.generated_tokens - 1);
}

TEST(GrammarGeneration, ForcedTokensAreTheCanonicalTokenization) {
  const auto grammar = schema(
      R"({"type":"object","properties":{"description":{"type":"string","maxLength":8},"temperature":{"type":"number","minimum":0,"maximum":2}},"required":["description","temperature"],"additionalProperties":false})");
  HashLm lm;
  GrammarConstraint c(*grammar, grammar_vocabulary(tok(), lm.vocab_size(), tok().eos_id()), {tok().eos_id()});
  // Everything up to the string's first character is forced; the last token is left to the model.
  std::vector<int32_t> expected = tok().encode(R"({"description":")", false, false);
  expected.pop_back();
  EXPECT_EQ(c.forced_tokens(tok()), expected);
  // Forced tokens in generation: each forced run is the canonical tokenization of its text minus the last token
  // (or all of it where the grammar ends).
  Generator g(lm, tok());
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    auto seq = lm.new_sequence();
    auto state = g.generate(request(grammar, seed), *seq, {});
    EXPECT_EQ(state->finish, FinishReason::Eos);
    EXPECT_TRUE(in_language(*grammar, state->text)) << state->text;
    EXPECT_GT(state->stats.forced_tokens, 2);
    // Fewer forwards than tokens: forced tokens go to the model in one batch with the sampled one before them.
    EXPECT_LT(lm.forward_calls, state->stats.generated_tokens);
    lm.forward_calls = 0;
  }
}

TEST(GrammarGeneration, NoFastForwardWithLogprobs) {
  HashLm lm;
  Generator g(lm, tok());
  GenerationRequest r = request(schema(R"({"type":"object","properties":{"abc":{"type":"boolean"}},"required":["abc"],"additionalProperties":false})"), 1);
  r.sampling.logprobs = true;
  auto seq = lm.new_sequence();
  auto state = g.generate(std::move(r), *seq, {});
  EXPECT_EQ(state->finish, FinishReason::Eos);
  EXPECT_TRUE(state->text == R"({"abc":true})" || state->text == R"({"abc":false})") << state->text;
  EXPECT_LE(state->stats.forced_tokens, 1);  // only the ending EOS
}

TEST(GrammarGeneration, OutputsAreClosedBeforeMaxTokens) {
  // Unbounded strings and arrays: the hash model rarely ends them, so without closing most outputs are cut.
  const auto grammar = schema(
      R"({"type":"object","properties":{"title":{"type":"string"},"items":{"type":"array","items":{"type":"string"},"minItems":2},"n":{"type":"integer"}},"required":["title","items","n"],"additionalProperties":false})");
  HashLm lm;
  Generator g(lm, tok());
  int closed = 0, cut_without = 0, closed_speculative = 0;
  for (int64_t max_tokens : {20, 27, 40, 64}) {
    for (uint64_t seed = 1; seed <= 4; ++seed) {
      GenerationRequest r = request(grammar, seed);
      r.max_tokens = max_tokens;
      auto seq = lm.new_sequence();
      auto state = g.generate(r, *seq, {});
      SCOPED_TRACE(std::to_string(max_tokens) + " seed " + std::to_string(seed) + ": " + state->text);
      EXPECT_TRUE(in_language(*grammar, state->text));
      EXPECT_LE(state->stats.generated_tokens, max_tokens);
      // Ended by EOS, or by max_tokens exactly where the text is complete.
      EXPECT_TRUE(state->tokens.back().token == tok().eos_id() || state->finish == FinishReason::MaxTokens);
      if (state->stats.closing_tokens > 0) {
        ++closed;
        EXPECT_EQ(state->finish, FinishReason::MaxTokens);  // the budget ended it, not the model
      }
      // The speculative loop closes the same way.
      HashLm spec_lm(/*draft_noise=*/6.0f);
      SpeculativeGenerator spec(spec_lm, tok(), 2);
      auto seq3 = spec_lm.new_sequence();
      auto s = spec.generate(r, *seq3, {});
      EXPECT_TRUE(in_language(*grammar, s->text)) << s->text;
      EXPECT_LE(s->stats.generated_tokens, max_tokens);
      closed_speculative += s->stats.closing_tokens > 0;
      r.close_before_limit = false;
      auto seq2 = lm.new_sequence();
      auto cut = g.generate(r, *seq2, {});
      cut_without += !in_language(*grammar, cut->text);
    }
  }
  EXPECT_GT(closed, 8);
  EXPECT_GT(closed_speculative, 8);
  EXPECT_GT(cut_without, 8);
}

TEST(GrammarGeneration, CompletionsStartingInsideACharacterUseByteTokens) {
  const auto grammar = schema(R"({"type":"string","maxLength":3})");
  HashLm lm;
  GrammarConstraint c(*grammar, grammar_vocabulary(tok(), lm.vocab_size(), tok().eos_id()), {tok().eos_id()});
  ASSERT_TRUE(c.matcher().steps() == 0);
  // '"' then the first byte of "é" (0xC3 0xA9) as a byte token: the completion starts with 0xA9.
  const std::vector<int32_t> quote = tok().encode("\"", false, false);
  ASSERT_EQ(quote.size(), 1u);
  ASSERT_TRUE(c.accept(quote[0]));
  int32_t lead = -1;
  for (int32_t id = 0; id < tok().vocab_size() && lead < 0; ++id)
    if (!tok().is_special(id) && tok().token_bytes(id) == "\xC3") lead = id;
  ASSERT_GE(lead, 0);
  ASSERT_TRUE(c.accept(lead));
  const auto completion = c.completion_tokens(tok());
  ASSERT_TRUE(completion.has_value());
  std::string spelled;
  for (int32_t id : *completion) spelled += tok().token_bytes(id);
  EXPECT_EQ(uint8_t(spelled[0]) & 0xC0, 0x80);
  EXPECT_EQ(spelled.back(), '"');
  for (int32_t id : *completion) ASSERT_TRUE(c.accept(id));
  EXPECT_TRUE(c.matcher().is_accepted());
}

TEST(GrammarGeneration, SpeculativeDraftsRollBackAndMatchThePlainLoop) {
  int64_t drafts = 0, accepted = 0;
  for (const std::string& s : schemas()) {
    const auto grammar = schema(s);
    for (int k : {1, 3}) {
      for (uint64_t seed = 1; seed <= 3; ++seed) {
        // Greedy: the speculative loop's output is the plain loop's, token for token (without fast-forward,
        // which changes which tokens spell the forced text).
        HashLm plain_lm, spec_lm(/*draft_noise=*/6.0f);
        Generator plain(plain_lm, tok());
        SpeculativeGenerator spec(spec_lm, tok(), k);
        GenerationRequest greedy = request(grammar, seed, 0.0);
        greedy.prompt.push_back(int32_t(100 + seed));
        greedy.fast_forward = false;
        auto seq_a = plain_lm.new_sequence(), seq_b = spec_lm.new_sequence();
        auto a = plain.generate(greedy, *seq_a, {});
        auto b = spec.generate(greedy, *seq_b, {});
        EXPECT_EQ(ids(*a), ids(*b)) << s;
        EXPECT_EQ(b->finish, FinishReason::Eos) << b->text;
        EXPECT_TRUE(in_language(*grammar, b->text)) << b->text;
        // Sampling: in the language, whatever was rejected.
        auto seq_c = spec_lm.new_sequence();
        auto c = spec.generate(request(grammar, seed), *seq_c, {});
        EXPECT_EQ(c->finish, FinishReason::Eos) << c->text;
        EXPECT_TRUE(in_language(*grammar, c->text)) << c->text;
        drafts += b->stats.draft_tokens + c->stats.draft_tokens;
        accepted += b->stats.accepted_draft_tokens + c->stats.accepted_draft_tokens;
      }
    }
  }
  EXPECT_GT(accepted, 0);
  EXPECT_LT(accepted, drafts);  // some drafts were rejected and rolled back
}

std::string spelled(const std::vector<int32_t>& ids, size_t from = 0) {
  std::string out;
  for (size_t i = from; i < ids.size(); ++i) out += tok().token_bytes(ids[i]);
  return out;
}

// On the tokenizer alone: for a prompt that ends inside what a longer text tokenizes as one token, the healed
// prompt is a prefix of the longer text's canonical tokens and the removed bytes start the rest — so a model
// that continues from the healed prompt can produce exactly the canonical tokens across the boundary, which
// the unhealed prompt cannot.
TEST(TokenHealing, BacksOffToTheCanonicalBoundary) {
  HashLm lm;
  const auto vocab = grammar_vocabulary(tok(), lm.vocab_size(), tok().eos_id());
  // (prompt, what follows, whether the prompt's own tokens end at a boundary the longer text does not have)
  const std::vector<std::tuple<std::string, std::string, bool>> cases = {
      {"Visit http:", "//example.com/index.html", true},
      {R"({"key": ")", R"(value", "n": 1})", false},
      {"The quick ", "brown fox jumps", true},
      {"The quick bro", "wn fox jumps", true},
  };
  for (const auto& [prompt, rest, wrong_boundary] : cases) {
    SCOPED_TRACE(prompt);
    const std::vector<int32_t> ids = tok().encode(prompt, false, false);
    const std::vector<int32_t> full = tok().encode(prompt + rest, false, false);
    const HealedPrompt healed = heal_prompt(ids, *vocab);
    ASSERT_FALSE(healed.removed.empty());
    EXPECT_EQ(spelled(healed.tokens) + healed.removed, prompt);
    EXPECT_LE(ids.size() - healed.tokens.size(), 4u);
    ASSERT_LE(healed.tokens.size(), full.size());
    EXPECT_TRUE(std::equal(healed.tokens.begin(), healed.tokens.end(), full.begin()));
    EXPECT_EQ(spelled(full, healed.tokens.size()).substr(0, healed.removed.size()), healed.removed);
    // Unhealed, the prompt's tokens are not a prefix of the canonical tokens: the boundary was wrong.
    if (wrong_boundary) EXPECT_FALSE(ids.size() <= full.size() && std::equal(ids.begin(), ids.end(), full.begin()));
  }
  // Nothing to heal: a prompt whose end no longer token extends, and a prompt ending in a special token.
  const std::vector<int32_t> eos_end = {tok().encode("Hello", false, false)[0], tok().eos_id()};
  EXPECT_TRUE(heal_prompt(eos_end, *vocab).removed.empty());
}

TEST(TokenHealing, GenerationStartsWithTheRemovedBytesAndDoesNotRepeatThem) {
  HashLm lm;
  Generator g(lm, tok());
  int crossing = 0;
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    GenerationRequest r = request(nullptr, seed);
    r.prompt = tok().encode("Visit http:", true, false);
    r.max_tokens = 6;
    r.token_healing = true;
    r.ignore_eos = true;
    auto seq = lm.new_sequence();
    auto state = g.generate(r, *seq, {});
    const HealedPrompt healed = heal_prompt(r.prompt, *grammar_vocabulary(tok(), lm.vocab_size(), tok().eos_id()));
    EXPECT_EQ(state->stats.prompt_tokens, int64_t(healed.tokens.size()));
    std::vector<int32_t> out = ids(*state);
    const std::string bytes = spelled(out);
    ASSERT_GE(bytes.size(), healed.removed.size()) << bytes;
    EXPECT_EQ(bytes.substr(0, healed.removed.size()), healed.removed);
    EXPECT_EQ(state->text, tok().decode(out).substr(healed.removed.size()));
    crossing += tok().token_bytes(out[0]).size() > healed.removed.size();
  }
  EXPECT_GT(crossing, 0);  // the first token spans the old boundary
  // With a schema: the output after the removed bytes is in the schema's language.
  const auto grammar = schema(R"({"type":"object","properties":{"a":{"type":"integer","minimum":0,"maximum":9}},"required":["a"],"additionalProperties":false})");
  GenerationRequest r = request(grammar, 3);
  r.prompt = tok().encode("Result: ", true, false);
  r.token_healing = true;
  auto seq = lm.new_sequence();
  auto state = g.generate(r, *seq, {});
  EXPECT_EQ(state->finish, FinishReason::Eos);
  EXPECT_TRUE(in_language(*grammar, state->text)) << state->text;
}

}  // namespace
}  // namespace deepmoe
