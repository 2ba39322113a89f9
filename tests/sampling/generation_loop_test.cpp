// The generation loop driven by small deterministic models over the real DeepSeek-V3 tokenizer: scripted
// output checks EOS, stop strings across token boundaries, max_tokens, streaming and prefix reuse exactly.
#include "runtime/generator.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include <nlohmann/json.hpp>

#include "sampling/sampler_stages.h"

namespace deepmoe {
namespace {

// GPT-2's byte-level alphabet (openai/gpt-2 encoder.py bytes_to_unicode), written out here independently.
std::string byte_piece(uint8_t b) {
  auto printable = [](int c) { return (c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE); };
  uint32_t cp = b;
  if (!printable(b)) {
    int n = 0;
    for (int c = 0; c < b; ++c) n += !printable(c);
    cp = 256 + n;
  }
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

// A small byte-level BPE tokenizer in the DeepSeek-V3 layout: <bos> = 0, <eos> = 1, the 256 byte tokens, and a
// few merges so that some tokens span several characters (" beta" is 2 tokens, "alpha" one).
std::string tiny_tokenizer_json() {
  nlohmann::json vocab = nlohmann::json::object();
  int32_t next = 2;
  for (int b = 0; b < 256; ++b) vocab[byte_piece(static_cast<uint8_t>(b))] = next++;
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"Ġ", "b"}, {"e", "t"}, {"Ġb", "et"}, {"a", "l"}, {"p", "h"}, {"al", "ph"}, {"alph", "a"},
      {"Ġ", "g"}, {"a", "m"}, {"Ġg", "am"}, {"Ġgam", "m"}, {"Ġgamm", "a"}, {"Ġ", "d"}, {"e", "l"}};
  nlohmann::json merge_list = nlohmann::json::array();
  for (const auto& [a, b] : merges) {
    merge_list.push_back(a + " " + b);
    if (!vocab.contains(a + b)) vocab[a + b] = next++;
  }
  auto added = [](int id, const char* content) {
    return nlohmann::json{{"id", id},         {"content", content}, {"single_word", false}, {"lstrip", false},
                          {"rstrip", false},  {"normalized", false}, {"special", true}};
  };
  nlohmann::json t = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", {added(0, "<bos>"), added(1, "<eos>")}},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern", {{"Regex", " ?\\p{L}+| ?[^\\s\\p{L}]+|\\s+"}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"vocab", vocab},
        {"merges", merge_list}}}};
  return t.dump();
}

const Tokenizer& tokenizer() {
  static const std::unique_ptr<Tokenizer> t = Tokenizer::from_json(
      tiny_tokenizer_json(),
      R"({"add_bos_token": false, "eos_token": {"__type": "AddedToken", "content": "<eos>", "lstrip": false,
          "normalized": true, "rstrip": false, "single_word": false}})",
      "tiny tokenizer");
  return *t;
}

constexpr int64_t kVocab = 300;  // the model's vocabulary may be larger than the tokenizer's

class TestSequence : public LmSequence {
 protected:
  void truncate_cache(int64_t) override {}
};

// Puts a large logit on script[position] where position is how many generated tokens follow the prompt of
// the sequence (the sequence length minus prompt_length), and a small spread over other tokens.
class ScriptedLm : public CausalLm {
 public:
  ScriptedLm(std::vector<int32_t> script, int64_t context = 4096) : script_(std::move(script)), context_(context) {}
  int64_t prompt_length = 0;
  int64_t forwarded_tokens = 0;
  int64_t forward_calls = 0;

  int64_t vocab_size() const override { return kVocab; }
  int64_t context_length() const override { return context_; }
  std::vector<int32_t> eos_token_ids() const override { return {1}; }
  std::unique_ptr<LmSequence> new_sequence() override { return std::make_unique<TestSequence>(); }

 protected:
  std::vector<float> forward_tokens(LmSequence& seq, std::span<const int32_t> tokens) override {
    forwarded_tokens += static_cast<int64_t>(tokens.size());
    ++forward_calls;
    const int64_t next = seq.length() + static_cast<int64_t>(tokens.size()) - prompt_length;
    std::vector<float> logits(kVocab);
    for (int64_t i = 0; i < kVocab; ++i) logits[i] = static_cast<float>((i * 7919) % 1000) * 1e-3f;
    if (next >= 0 && next < static_cast<int64_t>(script_.size())) logits[script_[next]] = 50.0f;
    return logits;
  }

 private:
  std::vector<int32_t> script_;
  int64_t context_;
};

std::vector<int32_t> encode(const std::string& text) { return tokenizer().encode(text, false, false); }

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

GenerationRequest greedy_request(std::vector<int32_t> prompt, int64_t max_tokens) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0.0;
  return r;
}

struct Outcome {
  std::unique_ptr<RequestState> state;
  std::vector<std::string> pieces;
};

Outcome run(Generator& g, GenerationRequest r, LmSequence& seq) {
  Outcome out;
  out.state = g.generate(std::move(r), seq, [&](std::string_view p) { out.pieces.emplace_back(p); });
  return out;
}

std::string joined(const std::vector<std::string>& pieces) {
  std::string s;
  for (const auto& p : pieces) s += p;
  return s;
}

TEST(GenerationLoop, GreedyFollowsScriptUntilMaxTokens) {
  const std::vector<int32_t> script = encode("The quick brown fox jumps over the lazy dog");
  ScriptedLm lm(script);
  const std::vector<int32_t> prompt = encode("Say:");
  lm.prompt_length = static_cast<int64_t>(prompt.size());
  Generator g(lm, tokenizer());
  auto seq = lm.new_sequence();
  const int64_t n = 5;
  Outcome r = run(g, greedy_request(prompt, n), *seq);
  EXPECT_EQ(r.state->finish, FinishReason::MaxTokens);
  ASSERT_EQ(r.state->tokens.size(), static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(r.state->tokens[i].token, script[i]);
  const std::vector<int32_t> expected_ids(script.begin(), script.begin() + n);
  EXPECT_EQ(r.state->text, tokenizer().decode(expected_ids));
  EXPECT_EQ(joined(r.pieces), r.state->text);
  // The prompt is prefilled in one call, then one call per further token; the last token is never fed.
  EXPECT_EQ(lm.forward_calls, n);
  EXPECT_EQ(lm.forwarded_tokens, static_cast<int64_t>(prompt.size()) + n - 1);
  EXPECT_EQ(seq->length(), static_cast<int64_t>(prompt.size()) + n - 1);
  EXPECT_EQ(r.state->stats.prompt_tokens, static_cast<int64_t>(prompt.size()));
  EXPECT_EQ(r.state->stats.generated_tokens, n);
}

TEST(GenerationLoop, EosEndsGenerationAndIsNotEmitted) {
  std::vector<int32_t> script = concat(encode("Done here"), {1});
  script.push_back(encode(" never")[0]);
  ScriptedLm lm(script);
  const std::vector<int32_t> prompt = encode("Q");
  lm.prompt_length = 1;
  Generator g(lm, tokenizer());
  auto seq = lm.new_sequence();
  Outcome r = run(g, greedy_request(prompt, 100), *seq);
  EXPECT_EQ(r.state->finish, FinishReason::Eos);
  EXPECT_EQ(r.state->text, "Done here");
  EXPECT_EQ(r.state->tokens.back().token, 1);

  GenerationRequest ignoring = greedy_request(prompt, static_cast<int64_t>(script.size()));
  ignoring.ignore_eos = true;
  auto seq2 = lm.new_sequence();
  Outcome r2 = run(g, ignoring, *seq2);
  EXPECT_EQ(r2.state->finish, FinishReason::MaxTokens);
  EXPECT_EQ(r2.state->tokens.size(), script.size());
}

TEST(GenerationLoop, ExtraStopTokenIdsEndGeneration) {
  const std::vector<int32_t> script = encode("a b c d e f");
  ScriptedLm lm(script);
  lm.prompt_length = 1;
  Generator g(lm, tokenizer());
  auto seq = lm.new_sequence();
  GenerationRequest req = greedy_request(encode("Q"), 100);
  req.stop_token_ids = {script[3]};
  Outcome r = run(g, req, *seq);
  EXPECT_EQ(r.state->finish, FinishReason::Eos);
  EXPECT_EQ(r.state->text, tokenizer().decode(std::vector<int32_t>(script.begin(), script.begin() + 3)));
}

TEST(GenerationLoop, StopStringAcrossTokensIsExcludedAndHeldBack) {
  const std::string text = "alpha beta gamma delta epsilon";
  const std::vector<int32_t> script = encode(text);
  ASSERT_EQ(encode("alpha").size(), 1u);  // the merges work, so tokens span several characters
  ASSERT_EQ(encode(" beta").size(), 2u);
  ASSERT_EQ(encode(" gamma").size(), 1u);
  ScriptedLm lm(script);
  lm.prompt_length = 1;
  Generator g(lm, tokenizer());
  auto seq = lm.new_sequence();
  GenerationRequest req = greedy_request(encode("Q"), 100);
  req.stop = {"a gam", "zzz"};  // spans the tokens " beta" and " gamma"
  Outcome r = run(g, req, *seq);
  EXPECT_EQ(r.state->finish, FinishReason::StopString);
  EXPECT_EQ(r.state->text, "alpha bet");
  EXPECT_EQ(joined(r.pieces), "alpha bet");
  EXPECT_EQ(r.state->stop_matcher.matched_stop(), "a gam");
  // Nothing is emitted that a later token could have turned into the stop string.
  for (const auto& p : r.pieces) EXPECT_EQ(p.find("a ga"), std::string::npos);
}

TEST(GenerationLoop, PartialStopAtMaxTokensIsReleased) {
  const std::vector<int32_t> script = encode("one two three");
  ScriptedLm lm(script);
  lm.prompt_length = 1;
  Generator g(lm, tokenizer());
  auto seq = lm.new_sequence();
  GenerationRequest req = greedy_request(encode("Q"), 2);
  req.stop = {" two three"};
  Outcome r = run(g, req, *seq);
  EXPECT_EQ(r.state->finish, FinishReason::MaxTokens);
  EXPECT_EQ(r.state->text, tokenizer().decode(std::vector<int32_t>(script.begin(), script.begin() + 2)));
}

TEST(GenerationLoop, MultibyteCharactersSplitAcrossTokensStreamWhole) {
  // No merge covers these characters, so each of their UTF-8 bytes is its own token; no piece may hold a
  // broken character.
  const std::vector<int32_t> script = encode("é中!");
  ASSERT_EQ(script.size(), 6u);
  ScriptedLm lm(script);
  lm.prompt_length = 1;
  Generator g(lm, tokenizer());
  auto seq = lm.new_sequence();
  Outcome r = run(g, greedy_request(encode("Q"), 6), *seq);
  EXPECT_EQ(r.state->text, "é中!");
  EXPECT_EQ(r.pieces, (std::vector<std::string>{"é", "中", "!"}));
}

TEST(GenerationLoop, NextTurnReusesCachedPrefix) {
  const std::vector<int32_t> script = encode(" and so on and so forth");
  ScriptedLm lm(script);
  const std::vector<int32_t> prompt = encode("Once upon a time");
  lm.prompt_length = static_cast<int64_t>(prompt.size());
  Generator g(lm, tokenizer());
  auto seq = lm.new_sequence();
  Outcome first = run(g, greedy_request(prompt, 3), *seq);
  std::vector<int32_t> history = prompt;
  for (const auto& t : first.state->tokens) history.push_back(t.token);
  const std::vector<int32_t> next_prompt = concat(history, encode(" More"));
  lm.forwarded_tokens = 0;
  lm.prompt_length = static_cast<int64_t>(next_prompt.size());
  Outcome second = run(g, greedy_request(next_prompt, 1), *seq);
  // The sequence held prompt + the first two generated tokens; only the rest is computed.
  const int64_t cached = static_cast<int64_t>(prompt.size()) + 2;
  EXPECT_EQ(second.state->stats.cached_prompt_tokens, cached);
  EXPECT_EQ(lm.forwarded_tokens, static_cast<int64_t>(next_prompt.size()) - cached);
  EXPECT_EQ(second.state->tokens[0].token, script[0]);

  // A prompt that diverges early truncates the cache at the divergence.
  lm.forwarded_tokens = 0;
  const std::vector<int32_t> other = encode("Once there was");
  Outcome third = run(g, greedy_request(other, 1), *seq);
  int64_t common = 0;
  while (common < static_cast<int64_t>(std::min(prompt.size(), other.size())) - 1 && prompt[common] == other[common])
    ++common;
  EXPECT_EQ(third.state->stats.cached_prompt_tokens, common);
  EXPECT_EQ(lm.forwarded_tokens, static_cast<int64_t>(other.size()) - common);
}

TEST(GenerationLoop, SameSeedSameTokensThroughTheLoop) {
  ScriptedLm lm({});  // no scripted token: the spread of small logits is sampled
  lm.prompt_length = 1;
  Generator g(lm, tokenizer());
  auto sample_run = [&](uint64_t seed) {
    GenerationRequest r;
    r.prompt = encode("Q");
    r.max_tokens = 16;
    r.sampling.temperature = 0.05;
    r.sampling.top_k = 50;
    r.sampling.seed = seed;
    r.ignore_eos = true;
    auto seq = lm.new_sequence();
    Outcome out = run(g, r, *seq);
    std::vector<int32_t> ids;
    for (const auto& t : out.state->tokens) ids.push_back(t.token);
    return ids;
  };
  EXPECT_EQ(sample_run(42), sample_run(42));
  EXPECT_NE(sample_run(42), sample_run(43));
}

TEST(GenerationLoop, BadRequestsAreRejectedNamingTheField) {
  ScriptedLm lm({}, /*context=*/64);
  Generator g(lm, tokenizer());
  auto seq = lm.new_sequence();
  auto field_of = [&](GenerationRequest r) -> std::string {
    try {
      g.start(std::move(r), *seq);
    } catch (const Error& e) {
      return e.context().field;
    }
    return "";
  };
  EXPECT_EQ(field_of(greedy_request({}, 4)), "prompt");
  EXPECT_EQ(field_of(greedy_request({5, -1}, 4)), "prompt");
  EXPECT_EQ(field_of(greedy_request({5, static_cast<int32_t>(kVocab)}, 4)), "prompt");
  EXPECT_EQ(field_of(greedy_request({5}, 0)), "max_tokens");
  EXPECT_EQ(field_of(greedy_request({5, 6}, 63)), "max_tokens");
  EXPECT_EQ(field_of(greedy_request(std::vector<int32_t>(64, 5), 1)), "prompt");
  EXPECT_EQ(field_of(greedy_request({5, 6}, 62)), "");
  GenerationRequest bad_temp = greedy_request({5}, 4);
  bad_temp.sampling.temperature = -1;
  EXPECT_EQ(field_of(bad_temp), "temperature");
  GenerationRequest bad_stop = greedy_request({5}, 4);
  bad_stop.stop = {""};
  EXPECT_EQ(field_of(bad_stop), "stop");
  GenerationRequest bad_stop_id = greedy_request({5}, 4);
  bad_stop_id.stop_token_ids = {-3};
  EXPECT_EQ(field_of(bad_stop_id), "stop_token_ids");
}

TEST(GenerationLoop, StatsCountPrefillAndDecode) {
  ScriptedLm lm(encode(" x y z w"));
  const std::vector<int32_t> prompt = encode("a b");
  lm.prompt_length = static_cast<int64_t>(prompt.size());
  Generator g(lm, tokenizer());
  auto seq = lm.new_sequence();
  Outcome r = run(g, greedy_request(prompt, 4), *seq);
  const GenerationStats& s = r.state->stats;
  EXPECT_EQ(s.generated_tokens, 4);
  EXPECT_GT(s.prefill_seconds, 0.0);
  EXPECT_GT(s.decode_seconds, 0.0);
  EXPECT_NEAR(s.decode_tokens_per_second(), 3.0 / s.decode_seconds, 1e-9);
  EXPECT_NEAR(s.prefill_tokens_per_second(), static_cast<double>(prompt.size()) / s.prefill_seconds, 1e-9);
}

}  // namespace
}  // namespace deepmoe
