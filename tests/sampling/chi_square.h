// Goodness-of-fit helper for the distribution tests: draws are counted over many seeded samples (a fixed seed
// makes the test deterministic) and compared with the expected probabilities.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

namespace deepmoe::test {

// Pearson's statistic; categories with expected count 0 must have no observations (returns +inf otherwise).
inline double chi_square(const std::vector<int64_t>& observed, const std::vector<double>& expected_prob) {
  int64_t n = 0;
  for (int64_t o : observed) n += o;
  double stat = 0.0;
  for (size_t i = 0; i < observed.size(); ++i) {
    const double e = expected_prob[i] * static_cast<double>(n);
    if (e == 0.0) {
      if (observed[i] != 0) return INFINITY;
      continue;
    }
    stat += (observed[i] - e) * (observed[i] - e) / e;
  }
  return stat;
}

// The chi-square quantile at 1 - 1e-4 for `df` degrees of freedom (Wilson–Hilferty approximation, z = 3.719):
// a correct sampler fails this bound once in ten thousand seeds.
inline double chi_square_bound(int df) {
  const double k = static_cast<double>(df);
  const double a = 2.0 / (9.0 * k);
  const double c = 1.0 - a + 3.719 * std::sqrt(a);
  return k * c * c * c;
}

}  // namespace deepmoe::test
