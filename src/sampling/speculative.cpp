#include "sampling/speculative.h"

#include <algorithm>

#include "core/error.h"

namespace deepmoe {

size_t greedy_accept_length(std::span<const int32_t> drafts, std::span<const int32_t> target_tokens) {
  DEEPMOE_CHECK(target_tokens.size() >= drafts.size());
  size_t n = 0;
  while (n < drafts.size() && drafts[n] == target_tokens[n]) ++n;
  return n;
}

TokenDistribution residual_distribution(const TokenDistribution& p, const TokenDistribution& q) {
  TokenDistribution out;
  double total = 0.0;
  for (size_t i = 0; i < p.ids.size(); ++i) {
    const double excess = p.probs[i] - q.prob(p.ids[i]);
    if (excess > 0.0) {
      out.ids.push_back(p.ids[i]);
      out.probs.push_back(excess);
      total += excess;
    }
  }
  if (total <= 0.0) return p;
  for (double& x : out.probs) x /= total;
  return out;
}

namespace {

// A draw with nothing to choose from (a point mass: greedy decoding) takes no random number.
int32_t draw(const TokenDistribution& d, Rng& rng) {
  if (d.ids.size() == 1) return d.ids.front();
  return sample_from(d, rng.uniform());
}

}  // namespace

DraftVerdict verify_draft(const TokenDistribution& p, const TokenDistribution& q, int32_t draft, Rng& rng) {
  const double px = p.prob(draft), qx = q.prob(draft);
  // u < p/q, written as u * q < p so no division; p >= q always accepts.
  if (px > 0.0 && (px >= qx || rng.uniform() * qx < px)) return {true, draft};
  return {false, draw(residual_distribution(p, q), rng)};
}

SpeculativeOutcome speculative_sample(std::span<const TokenDistribution> p, std::span<const TokenDistribution> q,
                                      std::span<const int32_t> drafts, Rng& rng) {
  DEEPMOE_CHECK(p.size() == drafts.size() + 1 && q.size() == drafts.size(),
                "speculative_sample needs one target distribution per draft plus one, and one draft distribution "
                "per draft");
  SpeculativeOutcome out;
  for (size_t i = 0; i < drafts.size(); ++i) {
    const DraftVerdict v = verify_draft(p[i], q[i], drafts[i], rng);
    out.tokens.push_back(v.token);
    if (!v.accepted) return out;
    ++out.accepted_drafts;
  }
  out.tokens.push_back(draw(p.back(), rng));
  return out;
}

}  // namespace deepmoe
