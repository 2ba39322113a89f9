#include "sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "sampling/sampler_stages.h"

namespace deepmoe {
namespace {

// log(sum(exp(logits))) in double: log-probabilities are reported values.
double log_sum_exp(std::span<const float> logits) {
  float max_logit = -std::numeric_limits<float>::infinity();
  for (float x : logits) max_logit = std::max(max_logit, x);
  double total = 0.0;
  for (float x : logits) total += std::exp(static_cast<double>(x) - max_logit);
  return max_logit + std::log(total);
}

std::vector<TokenLogprob> top_logprobs_with(std::span<const float> logits, int64_t n, double lse) {
  if (n <= 0 || logits.empty()) return {};
  std::vector<Candidate> all(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) all[i] = {static_cast<int32_t>(i), logits[i]};
  const size_t keep = std::min(all.size(), static_cast<size_t>(n));
  std::partial_sort(all.begin(), all.begin() + keep, all.end(), candidate_before);
  std::vector<TokenLogprob> out(keep);
  for (size_t i = 0; i < keep; ++i) out[i] = {all[i].id, static_cast<double>(all[i].logit) - lse};
  return out;
}

}  // namespace

double token_logprob(std::span<const float> logits, int32_t token) {
  DEEPMOE_CHECK(token >= 0 && static_cast<size_t>(token) < logits.size());
  return static_cast<double>(logits[token]) - log_sum_exp(logits);
}

std::vector<TokenLogprob> top_logprobs(std::span<const float> logits, int64_t n) {
  return top_logprobs_with(logits, n, log_sum_exp(logits));
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  if (auto error = validate(params)) throw *error;
}

void Sampler::set_prompt(std::span<const int32_t> prompt) {
  history_.assign(prompt.begin(), prompt.end());
  prompt_tokens_ = history_.size();
}

void Sampler::accept(int32_t token) { history_.push_back(token); }

void Sampler::penalize(std::span<const float> logits, std::span<const int32_t> pending,
                       std::span<const uint64_t> allowed) {
  work_.assign(logits.begin(), logits.end());
  if (!allowed.empty()) apply_allowed_tokens(work_, allowed);
  std::vector<int32_t> extended;
  std::span<const int32_t> history(history_);
  if (!pending.empty()) {
    extended = history_;
    extended.insert(extended.end(), pending.begin(), pending.end());
    history = extended;
  }
  std::span<const int32_t> window = history;
  if (params_.penalty_last_n > 0 && window.size() > static_cast<size_t>(params_.penalty_last_n))
    window = window.last(static_cast<size_t>(params_.penalty_last_n));
  apply_repetition_penalty(work_, window, params_.repetition_penalty);
  apply_presence_frequency_penalties(work_, history.subspan(prompt_tokens_), params_.presence_penalty,
                                     params_.frequency_penalty);
}

std::vector<Candidate> Sampler::filtered_candidates(int64_t vocab_size) const {
  std::vector<Candidate> candidates = make_candidates(work_, params_.temperature);
  DEEPMOE_CHECK(!candidates.empty(), "every logit is -inf");
  if (params_.top_k > 0) keep_top_k(candidates, params_.top_k);
  keep_top_p(candidates, params_.top_p);
  keep_min_p(candidates, params_.min_p);
  sort_by_id(candidates, vocab_size);
  return candidates;
}

TokenDistribution Sampler::distribution(std::span<const float> logits, std::span<const int32_t> pending,
                                        std::span<const uint64_t> allowed) {
  DEEPMOE_CHECK(!logits.empty());
  penalize(logits, pending, allowed);
  if (params_.temperature == 0.0) {
    const int32_t token = argmax(work_);
    DEEPMOE_CHECK(token >= 0, "every logit is -inf or NaN");
    return TokenDistribution::point(token);
  }
  const std::vector<Candidate> candidates = filtered_candidates(static_cast<int64_t>(logits.size()));
  TokenDistribution out;
  out.probs = candidate_probabilities(candidates);
  out.ids.reserve(candidates.size());
  for (const Candidate& c : candidates) out.ids.push_back(c.id);
  return out;
}

SampledToken Sampler::sample(std::span<const float> logits, std::span<const uint64_t> allowed) {
  DEEPMOE_CHECK(!logits.empty());
  penalize(logits, {}, allowed);
  SampledToken out;
  if (params_.temperature == 0.0) {
    out.token = argmax(work_);
    DEEPMOE_CHECK(out.token >= 0, "every logit is -inf or NaN");
  } else {
    out.token = draw(filtered_candidates(static_cast<int64_t>(logits.size())), rng_.uniform());
  }
  if (params_.logprobs) {
    const double lse = log_sum_exp(logits);
    out.logprob = static_cast<double>(logits[out.token]) - lse;
    out.top = top_logprobs_with(logits, params_.top_logprobs, lse);
  }
  accept(out.token);
  return out;
}

}  // namespace deepmoe
