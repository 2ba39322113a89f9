// What a request asks of the sampler, and the check that rejects values no sampler can honour
// (the reliability checklist §2 R1, R4: out-of-range sampling values must be a clear request error, never a
// crash or a silent clamp).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"

namespace deepmoe {

struct SamplingParams {
  // 0 selects greedy decoding (argmax after penalties), as generate.py does for T = 0; > 0 divides the logits.
  double temperature = 1.0;
  // Keep the k most likely tokens; 0 disables the filter.
  int64_t top_k = 0;
  // Nucleus sampling (Holtzman et al. 2019): keep the smallest set of most likely tokens whose probability
  // reaches top_p. 1 disables the filter.
  double top_p = 1.0;
  // Keep tokens whose probability is at least min_p times the most likely token's; 0 disables the filter.
  double min_p = 0.0;
  // CTRL's repetition penalty (Keskar et al. 2019 §4.1): a logit of a token already in the window is divided by
  // it when positive and multiplied when negative. 1 disables it. Applies to prompt and generated tokens.
  double repetition_penalty = 1.0;
  // How many of the most recent tokens the repetition penalty looks at; 0 means the whole sequence.
  int64_t penalty_last_n = 0;
  // OpenAI's penalties: logit -= frequency_penalty * count + presence_penalty * (count > 0), over the
  // generated tokens only.
  double presence_penalty = 0.0;
  double frequency_penalty = 0.0;
  // Seed of the random source; the same seed, model, prompt and parameters give the same tokens.
  uint64_t seed = 0;
  // Report the log-probability of each chosen token, plus the top_logprobs most likely alternatives.
  bool logprobs = false;
  int64_t top_logprobs = 0;
};

// Bounds a deployment places on requests. The defaults follow OpenAI's API limits.
struct SamplingLimits {
  int64_t max_top_logprobs = 20;
  double max_repetition_penalty = 100.0;
  double max_abs_presence_frequency_penalty = 2.0;
};

// Returns the first problem with `params`, naming the parameter and the allowed range, or nothing if they are
// valid.
std::optional<Error> validate(const SamplingParams& params, const SamplingLimits& limits = {});

// Bounds on stop strings (TGI caps their number too: the reliability checklist §2 R2).
struct StopLimits {
  size_t max_stop_strings = 16;
  size_t max_stop_bytes = 256;
};

// Returns the first problem with a list of stop strings (empty string, too many, too long).
std::optional<Error> validate_stop_strings(const std::vector<std::string>& stops, const StopLimits& limits = {});

}  // namespace deepmoe
