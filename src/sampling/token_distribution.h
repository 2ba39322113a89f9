// A next-token distribution as the sampler chain leaves it: the tokens that keep any probability, in id order,
// with their probabilities in double. Speculative verification compares two of these (the target model's and
// the draft model's) token by token, so both come out of the same chain (Sampler::distribution).
#pragma once

#include <cstdint>
#include <vector>

namespace deepmoe {

struct TokenDistribution {
  std::vector<int32_t> ids;   // ascending, distinct
  std::vector<double> probs;  // same length, > 0, summing to 1 (up to rounding)

  // A point mass on `token` (greedy decoding's distribution).
  static TokenDistribution point(int32_t token);

  // The probability of `token` (0 when the chain removed it).
  double prob(int32_t token) const;
};

// Inverse CDF over ids in ascending order: the first token whose cumulative probability exceeds u * total, u
// uniform in [0, 1). The last token with probability left if rounding carries u * total to the full sum.
int32_t sample_from(const TokenDistribution& distribution, double u);

}  // namespace deepmoe
