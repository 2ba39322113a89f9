// The MoE router against hand-worked examples of the rules in reference §1.6 (bias only for selection, top-2-sum
// group scores, normalized unbiased weights × routed_scaling_factor) and HF's V2 MoEGate.
#include <gtest/gtest.h>

#include <cmath>

#include "model/config.h"
#include "model/gate.h"

namespace deepmoe {
namespace {

double logit(double p) { return std::log(p / (1 - p)); }

TEST(Gate, V3BiasSelectsButDoesNotWeight) {
  ModelConfig c;
  c.arch = ModelArch::DeepseekV3;
  c.n_routed_experts = 8;
  c.num_experts_per_tok = 2;
  c.n_group = 4;
  c.topk_group = 2;
  c.scoring_func = "sigmoid";
  c.topk_method = "noaux_tc";
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 2.5;
  // Scores (sigmoid) per expert; groups {0,1} {2,3} {4,5} {6,7}.
  const double p[8] = {0.9, 0.1, 0.5, 0.5, 0.6, 0.45, 0.2, 0.2};
  const float bias[8] = {0, 0.7f, 0, 0, 0, 0, 0.3f, 0.2f};
  float logits[8];
  for (int i = 0; i < 8; ++i) logits[i] = float(logit(p[i]));
  int32_t idx[2];
  float w[2];
  route_tokens(c, logits, bias, 1, idx, w);
  // Group scores with bias: g0 = 0.9+0.8 = 1.7, g1 = 1.0, g2 = 1.05, g3 = 0.5+0.4 = 0.9 → keep g0, g2.
  // Choice values: e0 0.9, e1 0.8, e4 0.6, e5 0.45 → top-2 = e0, e1 (e1 only thanks to its bias).
  EXPECT_EQ(idx[0], 0);
  EXPECT_EQ(idx[1], 1);
  // Weights from the UNBIASED scores 0.9 and 0.1, normalized, × 2.5.
  EXPECT_NEAR(w[0], 0.9 / 1.0 * 2.5, 1e-5);
  EXPECT_NEAR(w[1], 0.1 / 1.0 * 2.5, 1e-5);
}

TEST(Gate, V3GroupScoreIsTopTwoSumNotMax) {
  ModelConfig c;
  c.arch = ModelArch::DeepseekV3;
  c.n_routed_experts = 6;
  c.num_experts_per_tok = 1;
  c.n_group = 2;
  c.topk_group = 1;
  c.topk_method = "noaux_tc";
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 1.0;
  // Group 0 {0.95, 0.1, 0.1}: top-2 sum 1.05; group 1 {0.6, 0.6, 0.1}: 1.2 → group 1 wins though 0.95 is the max.
  const double p[6] = {0.95, 0.1, 0.1, 0.6, 0.6, 0.1};
  const float bias[6] = {0, 0, 0, 0, 0, 0};
  float logits[6];
  for (int i = 0; i < 6; ++i) logits[i] = float(logit(p[i]));
  int32_t idx[1];
  float w[1];
  route_tokens(c, logits, bias, 1, idx, w);
  EXPECT_EQ(idx[0], 3);
  EXPECT_NEAR(w[0], 1.0, 1e-6);  // normalized over one expert
}

TEST(Gate, V2SoftmaxGroupLimitedUsesGroupMaxAndScalesWithoutNorm) {
  ModelConfig c;
  c.arch = ModelArch::DeepseekV2;
  c.n_routed_experts = 4;
  c.num_experts_per_tok = 2;
  c.n_group = 2;
  c.topk_group = 1;
  c.scoring_func = "softmax";
  c.topk_method = "group_limited_greedy";
  c.norm_topk_prob = false;
  c.routed_scaling_factor = 16.0;
  // Softmax of logits {ln 4, ln 1, ln 3, ln 2} = {0.4, 0.1, 0.3, 0.2}. Group max: g0 0.4, g1 0.3 → keep g0.
  float logits[4] = {float(std::log(4.0)), 0.0f, float(std::log(3.0)), float(std::log(2.0))};
  int32_t idx[2];
  float w[2];
  route_tokens(c, logits, nullptr, 1, idx, w);
  EXPECT_EQ(idx[0], 0);
  EXPECT_EQ(idx[1], 1);
  EXPECT_NEAR(w[0], 0.4 * 16, 1e-5);
  EXPECT_NEAR(w[1], 0.1 * 16, 1e-5);
}

TEST(Gate, V2GreedyNormalizedWhenAsked) {
  ModelConfig c;
  c.arch = ModelArch::DeepseekV2;
  c.n_routed_experts = 4;
  c.num_experts_per_tok = 2;
  c.scoring_func = "softmax";
  c.topk_method = "greedy";
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 16.0;  // not applied when normalized (HF DeepseekV2 MoEGate)
  float logits[4] = {float(std::log(4.0)), 0.0f, float(std::log(3.0)), float(std::log(2.0))};
  int32_t idx[2];
  float w[2];
  route_tokens(c, logits, nullptr, 1, idx, w);
  EXPECT_EQ(idx[0], 0);
  EXPECT_EQ(idx[1], 2);
  EXPECT_NEAR(w[0], 0.4 / 0.7, 1e-5);
  EXPECT_NEAR(w[1], 0.3 / 0.7, 1e-5);
}

}  // namespace
}  // namespace deepmoe
