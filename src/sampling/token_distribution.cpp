#include "sampling/token_distribution.h"

#include <algorithm>

#include "core/error.h"

namespace deepmoe {

TokenDistribution TokenDistribution::point(int32_t token) { return TokenDistribution{{token}, {1.0}}; }

double TokenDistribution::prob(int32_t token) const {
  const auto it = std::lower_bound(ids.begin(), ids.end(), token);
  if (it == ids.end() || *it != token) return 0.0;
  return probs[static_cast<size_t>(it - ids.begin())];
}

int32_t sample_from(const TokenDistribution& distribution, double u) {
  DEEPMOE_CHECK(!distribution.ids.empty() && distribution.ids.size() == distribution.probs.size(),
                "sampling from an empty distribution");
  double total = 0.0;
  for (double p : distribution.probs) total += p;
  const double target = u * total;
  double cumulative = 0.0;
  int32_t last_possible = distribution.ids.front();
  for (size_t i = 0; i < distribution.ids.size(); ++i) {
    cumulative += distribution.probs[i];
    if (distribution.probs[i] > 0.0) last_possible = distribution.ids[i];
    if (cumulative > target) return distribution.ids[i];
  }
  return last_possible;
}

}  // namespace deepmoe
