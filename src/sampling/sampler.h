// The sampler chain of one request: penalties → temperature → top-k → top-p → min-p → one seeded draw, or
// greedy argmax at temperature 0; optionally the log-probabilities of the chosen token and the top-n.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "sampling/rng.h"
#include "sampling/sampler_stages.h"
#include "sampling/sampling_params.h"
#include "sampling/token_distribution.h"

namespace deepmoe {

struct TokenLogprob {
  int32_t token;
  double logprob;
};

struct SampledToken {
  int32_t token = -1;
  // Filled only when SamplingParams::logprobs is set. Log-probabilities are those of the model's own
  // distribution (log-softmax of the raw logits, before penalties and temperature), as OpenAI and vLLM's
  // default report them, so they do not change with the sampling settings.
  double logprob = 0.0;
  std::vector<TokenLogprob> top;  // the top_logprobs most likely tokens, most likely first
  // Taken without sampling: text a grammar forced, the completion that closes an output before max_tokens, or
  // the EOS that ends a complete one (no logits were computed for it).
  bool forced = false;
};

// Log-softmax of `logits` in double for `token`, and the n most likely tokens (ties: lower id first).
double token_logprob(std::span<const float> logits, int32_t token);
std::vector<TokenLogprob> top_logprobs(std::span<const float> logits, int64_t n);

class Sampler {
 public:
  // Throws deepmoe::Error when `params` fail validate().
  explicit Sampler(const SamplingParams& params);

  const SamplingParams& params() const { return params_; }

  // Sets the prompt, which the repetition penalty looks at; clears generated tokens.
  void set_prompt(std::span<const int32_t> prompt);

  // Chooses the next token from `logits` (one per vocabulary entry) and records it as generated. With
  // `allowed` (a token bitmask, e.g. a grammar's), only tokens whose bit is set can be chosen: the mask is
  // applied before every other stage. Log-probabilities stay those of the model's own distribution.
  SampledToken sample(std::span<const float> logits, std::span<const uint64_t> allowed = {});

  // Records a token chosen elsewhere (a forced or draft-verified token) as generated.
  void accept(int32_t token);

  // The distribution sample() would draw from after the generated tokens plus `pending` (tokens proposed but not
  // yet accepted, which the penalties see as generated): the same chain of stages, probabilities in double. A
  // point mass on the argmax at temperature 0. Speculative decoding builds the target and the draft
  // distributions with it, so both pass through exactly the stages plain sampling uses. `allowed` masks tokens as
  // in sample().
  TokenDistribution distribution(std::span<const float> logits, std::span<const int32_t> pending = {},
                                 std::span<const uint64_t> allowed = {});

  // The request's random source (speculative verification draws from it too, so one seed fixes everything).
  Rng& rng() { return rng_; }

  std::span<const int32_t> generated() const {
    return std::span<const int32_t>(history_).subspan(prompt_tokens_);
  }

 private:
  SamplingParams params_;
  Rng rng_;
  std::vector<int32_t> history_;  // prompt then generated tokens
  size_t prompt_tokens_ = 0;
  std::vector<float> work_;       // penalized logits

  // work_ = logits after the repetition and presence/frequency penalties over history_ + pending.
  void penalize(std::span<const float> logits, std::span<const int32_t> pending,
                std::span<const uint64_t> allowed = {});
  // The tempered, filtered candidates of work_ in id order (temperature > 0).
  std::vector<Candidate> filtered_candidates(int64_t vocab_size) const;
};

}  // namespace deepmoe
