// Each stage against a plain reference written independently in double: penalties as per-token formulas,
// filters by fully sorting (probability, id) pairs, the draw by counting seeded samples.
#include "sampling/sampler_stages.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "chi_square.h"
#include "sampling/rng.h"

namespace deepmoe {
namespace {

std::vector<float> random_logits(Rng& rng, size_t n, double scale) {
  std::vector<float> logits(n);
  for (float& x : logits) x = static_cast<float>((rng.uniform() * 2.0 - 1.0) * scale);
  return logits;
}

std::vector<double> softmax_ref(const std::vector<double>& logits) {
  double m = -INFINITY;
  for (double x : logits) m = std::max(m, x);
  double total = 0;
  std::vector<double> p(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) total += p[i] = std::exp(logits[i] - m);
  for (double& x : p) x /= total;
  return p;
}

// Ids sorted by descending probability, then ascending id.
std::vector<int32_t> ranked_ids(const std::vector<double>& logits) {
  std::vector<int32_t> ids(logits.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  std::sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  });
  return ids;
}

std::set<int32_t> ids_of(const std::vector<Candidate>& c) {
  std::set<int32_t> out;
  for (const Candidate& x : c) out.insert(x.id);
  return out;
}

TEST(SamplerStages, RepetitionPenaltyMatchesFormulaOncePerDistinctToken) {
  std::vector<float> logits = {2.0f, -2.0f, 0.5f, -0.5f, 0.0f, 3.0f};
  const std::vector<int32_t> window = {0, 1, 1, 3, 4, 0, 0};
  const double penalty = 1.3;
  std::vector<float> ref = logits;
  for (int32_t t : std::set<int32_t>(window.begin(), window.end()))
    ref[t] = ref[t] > 0 ? static_cast<float>(ref[t] / penalty) : static_cast<float>(ref[t] * penalty);
  apply_repetition_penalty(logits, window, penalty);
  EXPECT_EQ(logits, ref);
  EXPECT_FLOAT_EQ(logits[0], 2.0f / 1.3f);
  EXPECT_FLOAT_EQ(logits[1], -2.6f);
  EXPECT_EQ(logits[2], 0.5f);  // not in the window
}

TEST(SamplerStages, PresenceAndFrequencyPenaltiesFollowOpenAIFormula) {
  std::vector<float> logits = {1.0f, 1.0f, 1.0f, 1.0f};
  const std::vector<int32_t> generated = {2, 2, 2, 0};
  apply_presence_frequency_penalties(logits, generated, 0.5, 0.25);
  EXPECT_FLOAT_EQ(logits[0], 1.0f - 0.25f - 0.5f);
  EXPECT_EQ(logits[1], 1.0f);
  EXPECT_FLOAT_EQ(logits[2], 1.0f - 3 * 0.25f - 0.5f);
  EXPECT_EQ(logits[3], 1.0f);
  std::vector<float> negative = {0.0f, 0.0f};
  apply_presence_frequency_penalties(negative, std::vector<int32_t>{1}, -1.0, -2.0);  // negative encourages
  EXPECT_FLOAT_EQ(negative[1], 3.0f);
}

TEST(SamplerStages, ArgmaxTakesLowestIdOnTiesAndSkipsMaskedTokens) {
  const float ninf = -std::numeric_limits<float>::infinity();
  EXPECT_EQ(argmax(std::vector<float>{1.0f, 3.0f, 3.0f, 2.0f}), 1);
  EXPECT_EQ(argmax(std::vector<float>{ninf, ninf, -5.0f}), 2);
  EXPECT_EQ(argmax(std::vector<float>{ninf, ninf}), -1);
}

TEST(SamplerStages, MakeCandidatesDropsMaskedTokensAndScalesByTemperature) {
  const float ninf = -std::numeric_limits<float>::infinity();
  const auto c = make_candidates(std::vector<float>{1.0f, ninf, -3.0f}, 0.5);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].id, 0);
  EXPECT_FLOAT_EQ(c[0].logit, 2.0f);
  EXPECT_EQ(c[1].id, 2);
  EXPECT_FLOAT_EQ(c[1].logit, -6.0f);
}

TEST(SamplerStages, TopKMatchesFullSortReference) {
  Rng rng(1);
  for (size_t vocab : {1u, 7u, 100u, 3000u}) {
    for (int64_t k : {1, 2, 5, 64, 5000}) {
      const std::vector<float> logits = random_logits(rng, vocab, 4.0);
      auto c = make_candidates(logits, 1.0);
      keep_top_k(c, k);
      const auto ranked = ranked_ids(std::vector<double>(logits.begin(), logits.end()));
      const size_t keep = std::min<size_t>(vocab, k);
      ASSERT_EQ(c.size(), keep);
      for (size_t i = 0; i < keep; ++i) EXPECT_EQ(c[i].id, ranked[i]) << "vocab " << vocab << " k " << k;
    }
  }
}

TEST(SamplerStages, TopKBreaksTiesByLowerId) {
  auto c = make_candidates(std::vector<float>{1.0f, 2.0f, 2.0f, 2.0f, 0.0f}, 1.0);
  keep_top_k(c, 2);
  EXPECT_EQ(ids_of(c), (std::set<int32_t>{1, 2}));
}

// Reference nucleus: sort all probabilities in double, keep the shortest prefix reaching top_p.
std::set<int32_t> top_p_ref(const std::vector<float>& logits, double top_p) {
  const std::vector<double> l(logits.begin(), logits.end());
  const auto p = softmax_ref(l);
  const auto ranked = ranked_ids(l);
  std::set<int32_t> kept;
  double cumulative = 0;
  for (int32_t id : ranked) {
    kept.insert(id);
    cumulative += p[id];
    if (cumulative >= top_p) break;
  }
  return kept;
}

TEST(SamplerStages, TopPMatchesSortedDoubleReference) {
  Rng rng(2);
  for (size_t vocab : {1u, 2u, 50u, 1000u, 20000u}) {
    for (double scale : {0.5, 3.0, 12.0}) {
      for (double top_p : {0.05, 0.3, 0.9, 0.999}) {
        const std::vector<float> logits = random_logits(rng, vocab, scale);
        auto c = make_candidates(logits, 1.0);
        keep_top_p(c, top_p);
        EXPECT_EQ(ids_of(c), top_p_ref(logits, top_p)) << "vocab " << vocab << " scale " << scale << " p " << top_p;
      }
    }
  }
}

TEST(SamplerStages, TopPWithALargeNucleusMatchesReference) {
  // A flat distribution puts most of the vocabulary in the nucleus: every block but the crossing one is summed
  // without sorting.
  Rng rng(12);
  const std::vector<float> logits = random_logits(rng, 129280, 0.5);
  for (double top_p : {0.5, 0.97}) {
    auto c = make_candidates(logits, 1.0);
    keep_top_p(c, top_p);
    EXPECT_EQ(ids_of(c), top_p_ref(logits, top_p)) << top_p;
  }
}

TEST(SamplerStages, SortByIdRestoresCanonicalOrder) {
  Rng rng(13);
  for (size_t n : {10u, 5000u}) {
    auto c = make_candidates(random_logits(rng, 20000, 3.0), 1.0);
    keep_top_k(c, static_cast<int64_t>(n));
    std::vector<Candidate> expected = c;
    std::sort(expected.begin(), expected.end(), [](auto& a, auto& b) { return a.id < b.id; });
    sort_by_id(c, 20000);
    ASSERT_EQ(c.size(), expected.size());
    for (size_t i = 0; i < c.size(); ++i) {
      EXPECT_EQ(c[i].id, expected[i].id);
      EXPECT_EQ(c[i].logit, expected[i].logit);
    }
  }
}

TEST(SamplerStages, TopPRenormalizesOverRemainingCandidates) {
  // After top-k keeps {0, 1} with logits ln 3 and 0, their probabilities are 0.75 and 0.25 (token 2 carries no
  // mass), so top_p = 0.75 keeps only token 0.
  auto c = make_candidates(std::vector<float>{std::log(3.0f), 0.0f, -0.5f}, 1.0);
  keep_top_k(c, 2);
  keep_top_p(c, 0.74);
  EXPECT_EQ(ids_of(c), (std::set<int32_t>{0}));
}

TEST(SamplerStages, MinPMatchesReference) {
  Rng rng(3);
  for (double min_p : {0.01, 0.1, 0.5, 1.0}) {
    const std::vector<float> logits = random_logits(rng, 500, 5.0);
    auto c = make_candidates(logits, 1.0);
    keep_min_p(c, min_p);
    const auto p = softmax_ref(std::vector<double>(logits.begin(), logits.end()));
    const double pmax = *std::max_element(p.begin(), p.end());
    std::set<int32_t> expected;
    for (size_t i = 0; i < p.size(); ++i)
      if (p[i] >= min_p * pmax) expected.insert(static_cast<int32_t>(i));
    EXPECT_EQ(ids_of(c), expected) << min_p;
  }
}

TEST(SamplerStages, CandidateProbabilitiesMatchSoftmax) {
  const std::vector<float> logits = {0.1f, -1.0f, 2.0f, 0.0f};
  const auto c = make_candidates(logits, 1.0);
  const auto p = candidate_probabilities(c);
  const auto ref = softmax_ref(std::vector<double>(logits.begin(), logits.end()));
  for (size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(p[i], ref[i], 1e-15);
}

TEST(SamplerStages, DrawFollowsTheDistribution) {
  const std::vector<float> logits = {0.0f, 1.0f, -1.0f, 2.0f, 0.5f, -3.0f, 1.5f, 0.2f};
  const auto c = make_candidates(logits, 1.0);
  const auto expected = softmax_ref(std::vector<double>(logits.begin(), logits.end()));
  Rng rng(4);
  std::vector<int64_t> counts(logits.size(), 0);
  for (int i = 0; i < 100000; ++i) ++counts[draw(c, rng.uniform())];
  EXPECT_LT(test::chi_square(counts, expected), test::chi_square_bound(static_cast<int>(logits.size()) - 1));
}

TEST(SamplerStages, DrawEdgesOfTheUnitInterval) {
  const auto c = make_candidates(std::vector<float>{0.0f, 0.0f, 0.0f}, 1.0);
  EXPECT_EQ(draw(c, 0.0), 0);
  EXPECT_EQ(draw(c, std::nextafter(1.0, 0.0)), 2);
  EXPECT_EQ(draw(c, 0.5), 1);
}

}  // namespace
}  // namespace deepmoe
