#include "sampling/sampler_stages.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>

#include "core/error.h"

namespace deepmoe {
namespace {

// Unnormalized probability exp(logit - max) in float (one expf per token keeps a 129k vocabulary cheap); sums
// are accumulated in double in candidate order, so a given candidate list always gives the same result.
float weight(const Candidate& c, float max_logit) { return std::exp(c.logit - max_logit); }

float max_candidate_logit(std::span<const Candidate> candidates) {
  float m = -std::numeric_limits<float>::infinity();
  for (const Candidate& c : candidates) m = std::max(m, c.logit);
  return m;
}

double sum_weights(std::span<const Candidate> candidates, float max_logit) {
  double total = 0.0;
  for (const Candidate& c : candidates) total += weight(c, max_logit);
  return total;
}

void check_token(int32_t token, size_t vocab) {
  DEEPMOE_CHECK(token >= 0 && static_cast<size_t>(token) < vocab,
                "token " + std::to_string(token) + " outside the vocabulary of " + std::to_string(vocab));
}

}  // namespace

bool candidate_before(const Candidate& a, const Candidate& b) {
  if (a.logit != b.logit) return a.logit > b.logit;
  return a.id < b.id;
}

void apply_repetition_penalty(std::span<float> logits, std::span<const int32_t> window, double penalty) {
  if (penalty == 1.0 || window.empty()) return;
  std::vector<int32_t> distinct(window.begin(), window.end());
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  for (int32_t token : distinct) {
    check_token(token, logits.size());
    float& logit = logits[token];
    logit = logit > 0 ? static_cast<float>(logit / penalty) : static_cast<float>(logit * penalty);
  }
}

void apply_presence_frequency_penalties(std::span<float> logits, std::span<const int32_t> generated,
                                        double presence, double frequency) {
  if ((presence == 0.0 && frequency == 0.0) || generated.empty()) return;
  std::unordered_map<int32_t, int64_t> counts;
  for (int32_t token : generated) {
    check_token(token, logits.size());
    ++counts[token];
  }
  for (const auto& [token, count] : counts)
    logits[token] = static_cast<float>(logits[token] - static_cast<double>(count) * frequency - presence);
}

int32_t argmax(std::span<const float> logits) {
  int32_t best = -1;
  float best_logit = -std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < logits.size(); ++i) {
    if (logits[i] > best_logit) {
      best_logit = logits[i];
      best = static_cast<int32_t>(i);
    }
  }
  return best;
}

std::vector<Candidate> make_candidates(std::span<const float> logits, double temperature) {
  DEEPMOE_CHECK(temperature > 0.0);
  std::vector<Candidate> out;
  out.reserve(logits.size());
  const float inv_t = static_cast<float>(1.0 / temperature);
  for (size_t i = 0; i < logits.size(); ++i) {
    DEEPMOE_CHECK(!std::isnan(logits[i]), "NaN logit at token " + std::to_string(i));
    if (logits[i] == -std::numeric_limits<float>::infinity()) continue;
    out.push_back({static_cast<int32_t>(i), temperature == 1.0 ? logits[i] : logits[i] * inv_t});
  }
  return out;
}

void keep_top_k(std::vector<Candidate>& candidates, int64_t k) {
  DEEPMOE_CHECK(k > 0);
  const size_t keep = std::min(candidates.size(), static_cast<size_t>(k));
  std::partial_sort(candidates.begin(), candidates.begin() + keep, candidates.end(), candidate_before);
  candidates.resize(keep);
}

void keep_top_p(std::vector<Candidate>& candidates, double top_p) {
  if (top_p >= 1.0 || candidates.size() <= 1) return;
  // The normalizer needs every candidate, but the ranking is needed only where the cumulative mass crosses
  // top_p: select growing prefixes (64, 512, ... candidates; nth_element is linear) and add up whole blocks
  // that stay below the target, then narrow the block that crosses it.
  const float max_logit = max_candidate_logit(candidates);
  const double target = top_p * sum_weights(candidates, max_logit);
  size_t kept = 0;  // candidates [0, kept) are in the nucleus; their mass is `cumulative`
  double cumulative = 0.0;
  for (size_t prefix = 64;; prefix *= 8) {
    const size_t end = std::min(prefix, candidates.size());
    if (end < candidates.size())
      std::nth_element(candidates.begin() + kept, candidates.begin() + end, candidates.end(), candidate_before);
    const double block = sum_weights(std::span<const Candidate>(candidates).subspan(kept, end - kept), max_logit);
    if (cumulative + block < target && end < candidates.size()) {
      cumulative += block;
      kept = end;
      continue;
    }
    // The block [kept, end) crosses the target. Halve it until it is small (a quickselect on mass, linear on
    // average), then sort what is left.
    size_t hi = end;
    while (hi - kept > 64) {
      const size_t mid = kept + (hi - kept) / 2;
      std::nth_element(candidates.begin() + kept, candidates.begin() + mid, candidates.begin() + hi,
                       candidate_before);
      const double upper = sum_weights(std::span<const Candidate>(candidates).subspan(kept, mid - kept), max_logit);
      if (cumulative + upper >= target) {
        hi = mid;
      } else {
        cumulative += upper;
        kept = mid;
      }
    }
    std::sort(candidates.begin() + kept, candidates.begin() + hi, candidate_before);
    for (; kept < hi; ++kept) {
      cumulative += weight(candidates[kept], max_logit);
      if (cumulative >= target) {
        candidates.resize(kept + 1);
        return;
      }
    }
    candidates.resize(hi);  // rounding left the sum just short of the target: keep the block
    return;
  }
}

void sort_by_id(std::vector<Candidate>& candidates, int64_t vocab_size) {
  if (std::is_sorted(candidates.begin(), candidates.end(), [](auto& a, auto& b) { return a.id < b.id; })) return;
  if (candidates.size() < 4096) {
    std::sort(candidates.begin(), candidates.end(), [](auto& a, auto& b) { return a.id < b.id; });
    return;
  }
  // Many candidates: place them by id in one linear pass instead of a comparison sort.
  std::vector<float> logit_by_id(static_cast<size_t>(vocab_size), std::numeric_limits<float>::quiet_NaN());
  for (const Candidate& c : candidates) logit_by_id[static_cast<size_t>(c.id)] = c.logit;
  size_t n = 0;
  for (size_t id = 0; id < logit_by_id.size(); ++id)
    if (!std::isnan(logit_by_id[id])) candidates[n++] = {static_cast<int32_t>(id), logit_by_id[id]};
  DEEPMOE_CHECK(n == candidates.size(), "duplicate candidate ids");
}

void keep_min_p(std::vector<Candidate>& candidates, double min_p) {
  if (min_p <= 0.0 || candidates.empty()) return;
  const float max_logit = max_candidate_logit(candidates);
  // p_i >= min_p * p_max  <=>  logit_i - max_logit >= log(min_p); the most likely token always stays.
  const double threshold = std::log(min_p);
  std::erase_if(candidates, [&](const Candidate& c) {
    return c.logit != max_logit && static_cast<double>(c.logit) - max_logit < threshold;
  });
}

std::vector<double> candidate_probabilities(std::span<const Candidate> candidates) {
  std::vector<double> probs(candidates.size());
  if (candidates.empty()) return probs;
  // Reported probabilities, so exp in double (the draw itself needs only float weights).
  const double max_logit = max_candidate_logit(candidates);
  double total = 0.0;
  for (size_t i = 0; i < candidates.size(); ++i) total += probs[i] = std::exp(candidates[i].logit - max_logit);
  for (double& p : probs) p /= total;
  return probs;
}

int32_t draw(std::span<const Candidate> candidates, double u) {
  DEEPMOE_CHECK(!candidates.empty(), "no token left to sample");
  const float max_logit = max_candidate_logit(candidates);
  std::vector<float> weights(candidates.size());
  double total = 0.0;
  for (size_t i = 0; i < candidates.size(); ++i) total += weights[i] = weight(candidates[i], max_logit);
  const double target = u * total;
  double cumulative = 0.0;
  int32_t last_possible = candidates.front().id;
  for (size_t i = 0; i < candidates.size(); ++i) {
    cumulative += weights[i];
    if (weights[i] > 0.0f) last_possible = candidates[i].id;
    if (cumulative > target) return candidates[i].id;
  }
  return last_possible;  // u * total rounded up to the full sum: the last token that has any probability
}

void apply_allowed_tokens(std::span<float> logits, std::span<const uint64_t> allowed) {
  const float minus_inf = -std::numeric_limits<float>::infinity();
  for (size_t id = 0; id < logits.size(); ++id) {
    const size_t word = id >> 6;
    if (word >= allowed.size() || !((allowed[word] >> (id & 63)) & 1)) logits[id] = minus_inf;
  }
}

}  // namespace deepmoe
