// Speculative verification (sampling/speculative.h) on toy models over a small vocabulary: greedy acceptance, and
// the claim that matters — tokens produced by draft + verify are distributed exactly as tokens sampled from the
// target alone, with every sampler stage on. Checked by Pearson chi-square tests at significance 1e-4 (a correct
// implementation fails one seed in ten thousand; the seeds are fixed, so the test is deterministic), once against
// the exact distribution and once against plain sampling's own draws; deliberately wrong acceptance rules fed
// through the same harness must fail the same tests (negative controls).
#include "sampling/speculative.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <map>

#include "chi_square.h"
#include "sampling/sampler.h"

namespace deepmoe {
namespace {

using test::chi_square_bound;

// Pearson's goodness of fit, categories with expected count below 5 pooled into one (the usual validity rule).
struct ChiSquare {
  double stat = 0.0;
  int df = 0;
  bool passes() const { return df > 0 && stat < chi_square_bound(df); }
};

ChiSquare goodness_of_fit(const std::map<std::vector<int32_t>, int64_t>& observed,
                          const std::map<std::vector<int32_t>, double>& expected_prob, int64_t n) {
  ChiSquare out;
  double pooled_o = 0.0, pooled_e = 0.0;
  int categories = 0;
  for (const auto& [key, prob] : expected_prob) {
    const auto it = observed.find(key);
    const double o = it == observed.end() ? 0.0 : static_cast<double>(it->second), e = prob * n;
    if (e < 5.0) {
      pooled_o += o;
      pooled_e += e;
      continue;
    }
    out.stat += (o - e) * (o - e) / e;
    ++categories;
  }
  for (const auto& [key, count] : observed)  // outcomes the exact distribution gives no mass at all
    if (!expected_prob.count(key)) pooled_o += static_cast<double>(count);
  if (pooled_e > 0.0) {
    out.stat += (pooled_o - pooled_e) * (pooled_o - pooled_e) / pooled_e;
    ++categories;
  } else if (pooled_o > 0.0) {
    out.stat = INFINITY;
  }
  out.df = categories - 1;
  return out;
}

// Pearson's two-sample homogeneity test (2 × C table), categories with a combined count below 10 pooled.
ChiSquare two_sample(const std::map<std::vector<int32_t>, int64_t>& a, const std::map<std::vector<int32_t>, int64_t>& b) {
  std::map<std::vector<int32_t>, std::pair<double, double>> table;
  double na = 0.0, nb = 0.0;
  for (const auto& [k, c] : a) table[k].first += c, na += c;
  for (const auto& [k, c] : b) table[k].second += c, nb += c;
  std::vector<std::pair<double, double>> cells;
  std::pair<double, double> pooled{0.0, 0.0};
  for (const auto& [k, c] : table) {
    if (c.first + c.second < 10.0) {
      pooled.first += c.first;
      pooled.second += c.second;
    } else {
      cells.push_back(c);
    }
  }
  if (pooled.first + pooled.second > 0.0) cells.push_back(pooled);
  ChiSquare out;
  for (const auto& [oa, ob] : cells) {
    const double total = oa + ob, ea = total * na / (na + nb), eb = total * nb / (na + nb);
    out.stat += (oa - ea) * (oa - ea) / ea + (ob - eb) * (ob - eb) / eb;
  }
  out.df = static_cast<int>(cells.size()) - 1;
  return out;
}

// Two toy models over `vocab` tokens whose next-token logits depend on the previous token (a Markov chain), so
// the distribution at each position depends on what was accepted before it. The draft is a perturbed target, as
// a trained MTP module is: close enough to be accepted often, different enough to be rejected often.
struct ToyModels {
  int32_t vocab = 0;
  std::vector<std::vector<float>> target, draft;  // [previous token][vocab]

  ToyModels(int32_t v, uint64_t seed) : vocab(v) {
    Rng rng(seed);
    target.assign(v, std::vector<float>(v));
    draft.assign(v, std::vector<float>(v));
    for (int32_t a = 0; a < v; ++a)
      for (int32_t b = 0; b < v; ++b) {
        target[a][b] = static_cast<float>(3.0 * rng.uniform() - 1.5);
        draft[a][b] = target[a][b] + static_cast<float>(2.0 * rng.uniform() - 1.0);
      }
  }
};

// Every stage on, each cutting something: top-k drops the vocabulary's last token.
SamplingParams every_stage(uint64_t seed, int32_t vocab) {
  SamplingParams p;
  p.temperature = 0.8;
  p.top_k = vocab - 1;
  p.top_p = 0.97;
  p.min_p = 0.02;
  p.repetition_penalty = 1.3;
  p.presence_penalty = 0.2;
  p.frequency_penalty = 0.15;
  p.seed = seed;
  return p;
}

using Verify = std::function<SpeculativeOutcome(std::span<const TokenDistribution>, std::span<const TokenDistribution>,
                                                std::span<const int32_t>, Rng&)>;

// Generates `length` tokens after `prompt` by draft (K tokens from the draft model, recurrently) + verify.
std::vector<int32_t> speculative_run(const ToyModels& m, const SamplingParams& params, const std::vector<int32_t>& prompt,
                                     size_t length, size_t k, const Verify& verify) {
  Sampler sampler(params);
  sampler.set_prompt(prompt);
  std::vector<int32_t> out;
  while (out.size() < length) {
    const int32_t last = out.empty() ? prompt.back() : out.back();
    std::vector<int32_t> drafts;
    std::vector<TokenDistribution> p, q;
    for (size_t j = 0; j < k; ++j) {
      const int32_t prev = j == 0 ? last : drafts.back();
      q.push_back(sampler.distribution(m.draft[prev], drafts));
      drafts.push_back(sample_from(q.back(), sampler.rng().uniform()));
    }
    for (size_t j = 0; j <= k; ++j) {
      const int32_t prev = j == 0 ? last : drafts[j - 1];
      p.push_back(sampler.distribution(m.target[prev], std::span<const int32_t>(drafts).first(j)));
    }
    const SpeculativeOutcome step = verify(p, q, drafts, sampler.rng());
    EXPECT_EQ(step.tokens.size(), step.accepted_drafts + 1);
    for (int32_t t : step.tokens) {
      sampler.accept(t);
      out.push_back(t);
    }
  }
  out.resize(length);
  return out;
}

std::vector<int32_t> plain_run(const ToyModels& m, const SamplingParams& params, const std::vector<int32_t>& prompt,
                               size_t length) {
  Sampler sampler(params);
  sampler.set_prompt(prompt);
  std::vector<int32_t> out;
  while (out.size() < length) out.push_back(sampler.sample(m.target[out.empty() ? prompt.back() : out.back()]).token);
  return out;
}

// The exact joint distribution of the first `length` tokens under plain sampling, from the chain's distributions.
void exact_joint(const ToyModels& m, const SamplingParams& params, const std::vector<int32_t>& prompt, size_t length,
                 std::vector<int32_t>& prefix, double prob, std::map<std::vector<int32_t>, double>& out) {
  if (prefix.size() == length) {
    out[prefix] += prob;
    return;
  }
  Sampler sampler(params);
  sampler.set_prompt(prompt);
  const TokenDistribution d = sampler.distribution(m.target[prefix.empty() ? prompt.back() : prefix.back()], prefix);
  for (size_t i = 0; i < d.ids.size(); ++i) {
    prefix.push_back(d.ids[i]);
    exact_joint(m, params, prompt, length, prefix, prob * d.probs[i], out);
    prefix.pop_back();
  }
}

constexpr int64_t kDraws = 20000;

struct Experiment {
  std::map<std::vector<int32_t>, int64_t> speculative, plain;
  std::map<std::vector<int32_t>, double> exact;
};

// `length` tokens over a vocabulary of `vocab`, kDraws times with speculation and kDraws times without.
Experiment run_experiment(size_t length, size_t k, const Verify& verify, int32_t vocab) {
  const ToyModels m(vocab, 7);
  const std::vector<int32_t> prompt = {2, 4, 2};
  Experiment e;
  for (int64_t s = 0; s < kDraws; ++s) {
    ++e.speculative[speculative_run(m, every_stage(1000 + s, vocab), prompt, length, k, verify)];
    ++e.plain[plain_run(m, every_stage(900000 + s, vocab), prompt, length)];
  }
  std::vector<int32_t> prefix;
  exact_joint(m, every_stage(0, vocab), prompt, length, prefix, 1.0, e.exact);
  return e;
}

const Verify kCorrect = [](auto p, auto q, auto drafts, Rng& rng) { return speculative_sample(p, q, drafts, rng); };

// Negative control 1: the classic mistake of resampling from p (not norm(max(0, p - q))) after a rejection.
const Verify kResampleFromTarget = [](auto p, auto q, auto drafts, Rng& rng) {
  SpeculativeOutcome out;
  for (size_t i = 0; i < drafts.size(); ++i) {
    const double px = p[i].prob(drafts[i]), qx = q[i].prob(drafts[i]);
    if (rng.uniform() * qx < px) {
      out.tokens.push_back(drafts[i]);
      ++out.accepted_drafts;
      continue;
    }
    out.tokens.push_back(sample_from(p[i], rng.uniform()));
    return out;
  }
  out.tokens.push_back(sample_from(p.back(), rng.uniform()));
  return out;
};

// Negative control 2: accepting with probability min(1, p(x)) (the ratio's denominator forgotten).
const Verify kForgetDraftProbability = [](auto p, auto q, auto drafts, Rng& rng) {
  SpeculativeOutcome out;
  for (size_t i = 0; i < drafts.size(); ++i) {
    if (rng.uniform() < p[i].prob(drafts[i])) {
      out.tokens.push_back(drafts[i]);
      ++out.accepted_drafts;
      continue;
    }
    out.tokens.push_back(sample_from(residual_distribution(p[i], q[i]), rng.uniform()));
    return out;
  }
  out.tokens.push_back(sample_from(p.back(), rng.uniform()));
  return out;
};

void expect_matches(const Experiment& e, const char* what, int min_df) {
  const ChiSquare fit = goodness_of_fit(e.speculative, e.exact, kDraws);
  const ChiSquare same = two_sample(e.speculative, e.plain);
  const ChiSquare plain_fit = goodness_of_fit(e.plain, e.exact, kDraws);  // the harness itself is sound
  std::printf("[%s] vs exact: chi2 %.1f (df %d, bound %.1f); vs plain draws: chi2 %.1f (df %d, bound %.1f)\n", what,
              fit.stat, fit.df, chi_square_bound(fit.df), same.stat, same.df, chi_square_bound(same.df));
  EXPECT_GE(fit.df, min_df) << what << ": too few categories for the test to mean much";
  EXPECT_TRUE(fit.passes()) << what << ": chi2 " << fit.stat << " df " << fit.df;
  EXPECT_TRUE(same.passes()) << what << ": chi2 " << same.stat << " df " << same.df;
  EXPECT_TRUE(plain_fit.passes()) << what << ": plain sampling itself, chi2 " << plain_fit.stat;
}

void expect_rejected(const Experiment& e, const char* what) {
  const ChiSquare fit = goodness_of_fit(e.speculative, e.exact, kDraws);
  const ChiSquare same = two_sample(e.speculative, e.plain);
  std::printf("[%s] vs exact: chi2 %.1f (df %d, bound %.1f); vs plain draws: chi2 %.1f (df %d)\n", what, fit.stat,
              fit.df, chi_square_bound(fit.df), same.stat, same.df);
  EXPECT_FALSE(fit.passes()) << what;
  EXPECT_FALSE(same.passes()) << what;
}

TEST(Speculative, GreedyAcceptLength) {
  const std::vector<int32_t> drafts = {5, 7, 9};
  EXPECT_EQ(greedy_accept_length(drafts, std::vector<int32_t>{5, 7, 9, 1}), 3u);
  EXPECT_EQ(greedy_accept_length(drafts, std::vector<int32_t>{5, 8, 9, 1}), 1u);
  EXPECT_EQ(greedy_accept_length(drafts, std::vector<int32_t>{4, 7, 9, 1}), 0u);
  EXPECT_EQ(greedy_accept_length({}, std::vector<int32_t>{4}), 0u);
}

TEST(Speculative, PointMassesVerifyAsGreedyWithoutRandomness) {
  // Temperature 0 gives point masses on both sides: verification is then greedy acceptance and draws nothing.
  const std::vector<TokenDistribution> p = {TokenDistribution::point(3), TokenDistribution::point(4),
                                            TokenDistribution::point(8)};
  const std::vector<TokenDistribution> q = {TokenDistribution::point(3), TokenDistribution::point(6)};
  Rng rng(11), untouched(11);
  const SpeculativeOutcome out = speculative_sample(p, q, std::vector<int32_t>{3, 6}, rng);
  EXPECT_EQ(out.accepted_drafts, 1u);
  EXPECT_EQ(out.tokens, (std::vector<int32_t>{3, 4}));
  const SpeculativeOutcome all = speculative_sample(p, std::vector<TokenDistribution>{p[0], p[1]},
                                                    std::vector<int32_t>{3, 4}, rng);
  EXPECT_EQ(all.tokens, (std::vector<int32_t>{3, 4, 8}));  // both kept, then the bonus token
  EXPECT_EQ(rng.next_u64(), untouched.next_u64()) << "greedy verification consumed random numbers";
}

TEST(Speculative, ResidualDistribution) {
  const TokenDistribution p{{1, 2, 5}, {0.5, 0.3, 0.2}}, q{{1, 2, 3}, {0.7, 0.1, 0.2}};
  const TokenDistribution r = residual_distribution(p, q);  // max(0, p - q) = {2: 0.2, 5: 0.2}
  EXPECT_EQ(r.ids, (std::vector<int32_t>{2, 5}));
  ASSERT_EQ(r.probs.size(), 2u);
  EXPECT_NEAR(r.probs[0], 0.5, 1e-12);
  EXPECT_NEAR(r.probs[1], 0.5, 1e-12);
  EXPECT_EQ(residual_distribution(p, p).ids, p.ids);  // nothing in excess: p itself
  Rng rng(3);
  // A draft the target rules out is rejected even when the draft distribution gave it no mass.
  EXPECT_FALSE(verify_draft(p, q, 4, rng).accepted);
  EXPECT_TRUE(verify_draft(p, q, 5, rng).accepted);  // p(5) > q(5) = 0: always kept
}

TEST(Speculative, DeterministicGivenTheSeed) {
  const ToyModels m(6, 7);
  const auto a = speculative_run(m, every_stage(42, 6), {2, 4, 2}, 12, 3, kCorrect);
  const auto b = speculative_run(m, every_stage(42, 6), {2, 4, 2}, 12, 3, kCorrect);
  EXPECT_EQ(a, b);
}

TEST(Speculative, OneDraftPreservesTheNextTokenDistribution) {
  expect_matches(run_experiment(1, 1, kCorrect, 24), "K=1, first token", 10);
}

TEST(Speculative, RecurrentDraftsPreserveTheJointDistribution) {
  // Three tokens with K = 2: accepted runs, replacements, bonus tokens and a second step, with penalties that
  // depend on every accepted token.
  expect_matches(run_experiment(3, 2, kCorrect, 6), "K=2, three tokens", 40);
}

TEST(Speculative, NegativeControlsAreRejected) {
  expect_rejected(run_experiment(1, 1, kResampleFromTarget, 24), "resample from p, K=1");
  expect_rejected(run_experiment(3, 2, kForgetDraftProbability, 6), "accept with p(x), K=2");
}

}  // namespace
}  // namespace deepmoe
