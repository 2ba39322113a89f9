// The whole chain against a reference that applies the documented formulas in double to the full vocabulary,
// then counts seeded draws.
#include "sampling/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "chi_square.h"

namespace deepmoe {
namespace {

// The distribution the chain should sample from, written out plainly in double.
std::vector<double> chain_ref(std::vector<float> raw, const SamplingParams& p, const std::vector<int32_t>& prompt,
                              const std::vector<int32_t>& generated) {
  std::vector<double> l(raw.begin(), raw.end());
  std::vector<int32_t> history = prompt;
  history.insert(history.end(), generated.begin(), generated.end());
  if (p.penalty_last_n > 0 && history.size() > static_cast<size_t>(p.penalty_last_n))
    history.erase(history.begin(), history.end() - p.penalty_last_n);
  std::vector<bool> seen(l.size(), false);
  for (int32_t t : history) seen[t] = true;
  for (size_t i = 0; i < l.size(); ++i)
    if (seen[i]) l[i] = l[i] > 0 ? l[i] / p.repetition_penalty : l[i] * p.repetition_penalty;
  std::map<int32_t, int> count;
  for (int32_t t : generated) ++count[t];
  for (auto [t, n] : count) l[t] -= n * p.frequency_penalty + p.presence_penalty;
  for (double& x : l) x /= p.temperature;
  std::vector<int32_t> order(l.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int32_t>(i);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return l[a] != l[b] ? l[a] > l[b] : a < b; });
  std::vector<bool> keep(l.size(), true);
  if (p.top_k > 0)
    for (size_t r = p.top_k; r < order.size(); ++r) keep[order[r]] = false;
  auto normalized = [&] {
    double m = -INFINITY, total = 0;
    for (size_t i = 0; i < l.size(); ++i)
      if (keep[i]) m = std::max(m, l[i]);
    std::vector<double> q(l.size(), 0.0);
    for (size_t i = 0; i < l.size(); ++i)
      if (keep[i]) total += q[i] = std::exp(l[i] - m);
    for (double& x : q) x /= total;
    return q;
  };
  std::vector<double> q = normalized();
  double cumulative = 0;
  bool reached = false;
  for (int32_t id : order) {
    if (!keep[id]) continue;
    if (reached) keep[id] = false;
    cumulative += q[id];
    if (cumulative >= p.top_p) reached = true;
  }
  q = normalized();
  const double qmax = *std::max_element(q.begin(), q.end());
  for (size_t i = 0; i < q.size(); ++i)
    if (q[i] < p.min_p * qmax) keep[i] = false;
  return normalized();
}

std::vector<float> test_logits() {
  return {1.0f, 0.5f, -0.3f, 2.2f, 1.9f, -1.0f, 0.0f, 0.8f, 1.2f, -2.0f, 0.3f, 1.7f};
}

void expect_chain_distribution(const SamplingParams& params, const std::vector<int32_t>& prompt,
                               const std::vector<int32_t>& generated) {
  const std::vector<float> logits = test_logits();
  const std::vector<double> expected = chain_ref(logits, params, prompt, generated);
  int support = 0;
  for (double e : expected) support += e > 0;
  std::vector<int64_t> counts(logits.size(), 0);
  constexpr int kDraws = 40000;
  Sampler sampler(params);
  for (int i = 0; i < kDraws; ++i) {
    // Reset the history each time so every draw sees the same penalties; the RNG keeps advancing.
    sampler.set_prompt(prompt);
    for (int32_t t : generated) sampler.accept(t);
    ++counts[sampler.sample(logits).token];
  }
  if (support == 1) {
    for (size_t i = 0; i < counts.size(); ++i) EXPECT_EQ(counts[i], expected[i] > 0 ? kDraws : 0);
    return;
  }
  EXPECT_LT(test::chi_square(counts, expected), test::chi_square_bound(support - 1));
}

TEST(Sampler, PlainTemperatureSamplingMatchesSoftmax) {
  SamplingParams p;
  p.temperature = 0.7;
  p.seed = 11;
  expect_chain_distribution(p, {}, {});
}

TEST(Sampler, FullChainMatchesReference) {
  SamplingParams p;
  p.temperature = 1.3;
  p.top_k = 8;
  p.top_p = 0.85;
  p.min_p = 0.12;
  p.repetition_penalty = 1.4;
  p.presence_penalty = 0.3;
  p.frequency_penalty = 0.2;
  p.seed = 5;
  expect_chain_distribution(p, {3, 4, 9, 4}, {3, 3, 11});
}

// distribution() is the chain's own distribution (what speculative verification compares), with pending tokens
// penalized as if generated; and it leaves the sampler's history alone.
TEST(Sampler, DistributionMatchesReferenceWithPendingTokens) {
  SamplingParams p;
  p.temperature = 1.3;
  p.top_k = 8;
  p.top_p = 0.85;
  p.min_p = 0.12;
  p.repetition_penalty = 1.4;
  p.presence_penalty = 0.3;
  p.frequency_penalty = 0.2;
  p.penalty_last_n = 5;
  Sampler sampler(p);
  sampler.set_prompt(std::vector<int32_t>{3, 4, 9, 4});
  sampler.accept(3);
  const std::vector<int32_t> pending = {3, 11};
  const TokenDistribution d = sampler.distribution(test_logits(), pending);
  const std::vector<double> expected = chain_ref(test_logits(), p, {3, 4, 9, 4}, {3, 3, 11});
  std::vector<double> got(expected.size(), 0.0);
  for (size_t i = 0; i < d.ids.size(); ++i) {
    ASSERT_TRUE(i == 0 || d.ids[i] > d.ids[i - 1]) << "ids not ascending";
    got[static_cast<size_t>(d.ids[i])] = d.probs[i];
  }
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(got[i], expected[i], 1e-6) << "token " << i;
  EXPECT_EQ(sampler.generated().size(), 1u);
  SamplingParams greedy = p;
  greedy.temperature = 0.0;
  Sampler g(greedy);
  EXPECT_EQ(g.distribution(test_logits()).ids, std::vector<int32_t>{3});
  EXPECT_EQ(g.distribution(test_logits(), std::vector<int32_t>{3}).ids, std::vector<int32_t>{4});  // 2.2/1.4 < 1.9
}

TEST(Sampler, PenaltyWindowLimitsTheRepetitionPenalty) {
  SamplingParams p;
  p.repetition_penalty = 3.0;
  p.penalty_last_n = 2;
  p.seed = 6;
  expect_chain_distribution(p, {3, 4, 11, 8}, {});
}

TEST(Sampler, GreedyIsArgmaxAfterPenalties) {
  SamplingParams p;
  p.temperature = 0.0;
  Sampler sampler(p);
  EXPECT_EQ(sampler.sample(test_logits()).token, 3);
  SamplingParams penalized = p;
  penalized.repetition_penalty = 2.0;  // 2.2 / 2 = 1.1 < 1.9
  Sampler second(penalized);
  second.set_prompt(std::vector<int32_t>{3});
  EXPECT_EQ(second.sample(test_logits()).token, 4);
  EXPECT_EQ(second.sample(test_logits()).token, 11);  // 3 → 1.1 and 4 → 0.95 now, so 11 (1.7) leads
}

TEST(Sampler, AllowedMaskComesBeforeEveryStage) {
  // Greedy picks the best allowed token; sampling never leaves the mask, even with top-k 1 (which, applied
  // before the mask, would keep only a disallowed token).
  const std::vector<float> logits = test_logits();
  std::vector<uint64_t> allowed(1, 0);
  allowed[0] |= uint64_t(1) << 4;
  allowed[0] |= uint64_t(1) << 11;
  SamplingParams greedy;
  greedy.temperature = 0.0;
  Sampler g(greedy);
  EXPECT_EQ(g.sample(logits).token, 3);
  EXPECT_EQ(g.sample(logits, allowed).token, 4);  // 3 is best overall but masked
  SamplingParams p;
  p.temperature = 1.5;
  p.top_k = 1;
  p.seed = 7;
  Sampler s(p);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(s.sample(logits, allowed).token, 4);
  SamplingParams wide;
  wide.temperature = 2.0;
  wide.seed = 3;
  Sampler w(wide);
  std::map<int32_t, int> seen;
  for (int i = 0; i < 400; ++i) ++seen[w.sample(logits, allowed).token];
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_GT(seen[4], 0);
  EXPECT_GT(seen[11], 0);
}

TEST(Sampler, SameSeedReproducesDifferentSeedDiffers) {
  SamplingParams p;
  p.temperature = 1.0;
  p.top_p = 0.95;
  p.seed = 1234;
  auto run = [&](uint64_t seed) {
    SamplingParams q = p;
    q.seed = seed;
    Sampler s(q);
    std::vector<int32_t> tokens;
    for (int i = 0; i < 200; ++i) tokens.push_back(s.sample(test_logits()).token);
    return tokens;
  };
  EXPECT_EQ(run(1234), run(1234));
  EXPECT_NE(run(1234), run(1235));
}

TEST(Sampler, RejectsInvalidParams) {
  SamplingParams p;
  p.top_p = 0.0;
  try {
    Sampler s(p);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.context().field, "top_p");
  }
}

TEST(Sampler, LogprobsAreRawLogSoftmaxAndTopNIsSorted) {
  SamplingParams p;
  p.temperature = 0.5;
  p.repetition_penalty = 1.5;
  p.logprobs = true;
  p.top_logprobs = 3;
  p.seed = 9;
  Sampler s(p);
  const auto logits = test_logits();
  double m = -INFINITY, total = 0;
  for (float x : logits) m = std::max<double>(m, x);
  for (float x : logits) total += std::exp(x - m);
  const double lse = m + std::log(total);
  for (int step = 0; step < 20; ++step) {
    const SampledToken t = s.sample(logits);
    EXPECT_NEAR(t.logprob, logits[t.token] - lse, 1e-12);
    ASSERT_EQ(t.top.size(), 3u);
    EXPECT_EQ(t.top[0].token, 3);
    EXPECT_EQ(t.top[1].token, 4);
    EXPECT_EQ(t.top[2].token, 11);
    EXPECT_NEAR(t.top[1].logprob, 1.9 - lse, 1e-6);
  }
  EXPECT_EQ(s.generated().size(), 20u);
}

TEST(Sampler, MaskedTokensAreNeverChosen) {
  const float ninf = -std::numeric_limits<float>::infinity();
  std::vector<float> logits = {ninf, 0.0f, ninf, -1.0f, ninf};
  SamplingParams p;
  p.seed = 3;
  Sampler s(p);
  for (int i = 0; i < 1000; ++i) {
    const int32_t t = s.sample(logits).token;
    EXPECT_TRUE(t == 1 || t == 3);
  }
}

}  // namespace
}  // namespace deepmoe
