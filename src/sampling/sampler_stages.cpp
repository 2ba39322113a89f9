#include "sampling/sampler_stages.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>

#include "core/error.h"

namespace deepmoe {
namespace {

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
  // The normalizer needs every candidate; the sorted prefix usually needs only a few, so sort a growing prefix
  // (64, 256, ... candidates) until its mass reaches top_p instead of sorting the whole vocabulary.
  float max_logit = -std::numeric_limits<float>::infinity();
  for (const Candidate& c : candidates) max_logit = std::max(max_logit, c.logit);
  double total = 0.0;
  for (const Candidate& c : candidates) total += std::exp(static_cast<double>(c.logit) - max_logit);
  const double target = top_p * total;
  size_t sorted = 0;
  double cumulative = 0.0;
  for (size_t prefix = 64;; prefix *= 4) {
    const size_t end = std::min(prefix, candidates.size());
    std::partial_sort(candidates.begin() + sorted, candidates.begin() + end, candidates.end(), candidate_before);
    for (; sorted < end; ++sorted) {
      cumulative += std::exp(static_cast<double>(candidates[sorted].logit) - max_logit);
      if (cumulative >= target) {
        candidates.resize(sorted + 1);
        return;
      }
    }
    if (end == candidates.size()) return;  // rounding left the sum just short of the target: keep all
  }
}

void keep_min_p(std::vector<Candidate>& candidates, double min_p) {
  if (min_p <= 0.0 || candidates.empty()) return;
  float max_logit = -std::numeric_limits<float>::infinity();
  for (const Candidate& c : candidates) max_logit = std::max(max_logit, c.logit);
  // p_i >= min_p * p_max  <=>  logit_i - max_logit >= log(min_p); the most likely token always stays.
  const double threshold = std::log(min_p);
  std::erase_if(candidates, [&](const Candidate& c) {
    return c.logit != max_logit && static_cast<double>(c.logit) - max_logit < threshold;
  });
}

std::vector<double> candidate_probabilities(std::span<const Candidate> candidates) {
  std::vector<double> probs(candidates.size());
  if (candidates.empty()) return probs;
  float max_logit = -std::numeric_limits<float>::infinity();
  for (const Candidate& c : candidates) max_logit = std::max(max_logit, c.logit);
  double total = 0.0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    probs[i] = std::exp(static_cast<double>(candidates[i].logit) - max_logit);
    total += probs[i];
  }
  for (double& p : probs) p /= total;
  return probs;
}

int32_t draw(std::span<const Candidate> candidates, double u) {
  DEEPMOE_CHECK(!candidates.empty(), "no token left to sample");
  float max_logit = -std::numeric_limits<float>::infinity();
  for (const Candidate& c : candidates) max_logit = std::max(max_logit, c.logit);
  double total = 0.0;
  for (const Candidate& c : candidates) total += std::exp(static_cast<double>(c.logit) - max_logit);
  const double target = u * total;
  double cumulative = 0.0;
  int32_t last_possible = candidates.front().id;
  for (const Candidate& c : candidates) {
    const double weight = std::exp(static_cast<double>(c.logit) - max_logit);
    cumulative += weight;
    if (weight > 0.0) last_possible = c.id;
    if (cumulative > target) return c.id;
  }
  return last_possible;  // u * total rounded up to the full sum: the last token that has any probability
}

}  // namespace deepmoe
