// EPLB against the deepseek-ai/EPLB README example and the values of reference/deepseek_v3_system.md §3.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "parallel/eplb.h"
#include "parallel/expert_placement.h"

namespace deepmoe {
namespace {

using eplb::IntMatrix;
using eplb::Matrix;

const Matrix kReadmeWeight = {{90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86},
                              {20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27}};

TEST(Eplb, ReadmeHierarchicalExample) {
  auto r = eplb::rebalance_experts(kReadmeWeight, 16, 4, 2, 8);
  EXPECT_EQ(r.policy, "hierarchical");
  EXPECT_EQ(r.phy2log, (IntMatrix{{5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1},
                                  {7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1}}));
  EXPECT_EQ(r.logcnt, (IntMatrix{{1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1}, {1, 2, 1, 1, 1, 2, 2, 1, 2, 1, 1, 1}}));
  EXPECT_EQ(r.log2phy[0], (IntMatrix{{12, -1}, {15, 13}, {11, -1}, {6, -1}, {7, 5}, {0, 2}, {1, -1}, {3, -1},
                                     {4, -1}, {9, -1}, {8, 10}, {14, -1}}));
  EXPECT_EQ(r.log2phy[1], (IntMatrix{{13, -1}, {15, 11}, {8, -1}, {14, -1}, {9, -1}, {10, 12}, {2, 4}, {0, -1},
                                     {6, 3}, {7, -1}, {1, -1}, {5, -1}}));
}

TEST(Eplb, ReadmeExamplePerGpuLoads) {
  auto r = eplb::rebalance_experts(kReadmeWeight, 16, 4, 2, 8);
  const std::vector<std::vector<double>> expect = {{121.5, 86.5, 125, 113, 147.5, 131.5, 156, 152},
                                                   {173, 179.5, 120.5, 172, 123, 152, 118.5, 117.5}};
  for (size_t l = 0; l < 2; ++l) {
    auto load = eplb::gpu_loads(kReadmeWeight[l], r.phy2log[l], r.logcnt[l], 8);
    ASSERT_EQ(load.size(), 8u);
    for (size_t g = 0; g < 8; ++g) EXPECT_DOUBLE_EQ(load[g], expect[l][g]) << "layer " << l << " gpu " << g;
  }
}

TEST(Eplb, GlobalPolicyExample) {
  // num_nodes = 3 does not divide 4 groups, so EPLB falls back to the global policy.
  auto r = eplb::rebalance_experts(kReadmeWeight, 16, 4, 3, 8);
  EXPECT_EQ(r.policy, "global");
  EXPECT_EQ(r.phy2log, (IntMatrix{{10, 6, 10, 7, 0, 2, 11, 4, 5, 9, 5, 4, 8, 3, 1, 1},
                                  {1, 10, 2, 4, 5, 11, 5, 0, 6, 7, 6, 3, 8, 8, 9, 7}}));
}

TEST(Eplb, BalancedPackingFollowsTheGreedyRule) {
  // Descending 9, 7, 6, 5, 2, 1 into 2 packs of 3: 9→p0, 7→p1, 6→p1 (7<9), 5→p0 (9<13), 2→p1 (13<14), 1→p0.
  Matrix w = {{5, 9, 1, 7, 2, 6}};
  IntMatrix pack, rank;
  eplb::balanced_packing(w, 2, pack, rank);
  EXPECT_EQ(pack[0], (std::vector<int>{0, 0, 0, 1, 1, 1}));
  EXPECT_EQ(rank[0], (std::vector<int>{1, 0, 2, 0, 2, 1}));
  // One item per pack: identity.
  eplb::balanced_packing(w, 6, pack, rank);
  EXPECT_EQ(pack[0], (std::vector<int>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(rank[0], (std::vector<int>(6, 0)));
}

TEST(Eplb, ReplicateExpertsGreedyMinMax) {
  Matrix w = {{10, 40, 20}};
  IntMatrix phy2log, rank, logcnt;
  eplb::replicate_experts(w, 6, phy2log, rank, logcnt);
  // 40 → 40/2=20; then ties 20 (expert 1) vs 20 (expert 2): first index → 1 (40/3≈13.3); then 20 → expert 2.
  EXPECT_EQ(phy2log[0], (std::vector<int>{0, 1, 2, 1, 1, 2}));
  EXPECT_EQ(rank[0], (std::vector<int>{0, 0, 0, 1, 2, 1}));
  EXPECT_EQ(logcnt[0], (std::vector<int>{1, 3, 2}));
}

TEST(Eplb, ResultIsAValidPlacement) {
  // A V3-shaped layer: 256 experts, 8 groups, 32 redundant over 4 nodes × 8 GPUs.
  Matrix w(3, std::vector<float>(256));
  for (size_t l = 0; l < 3; ++l)
    for (size_t e = 0; e < 256; ++e) w[l][e] = float((e * 37 + l * 11) % 101 + 1) * (e % 17 == 0 ? 20.0f : 1.0f);
  auto r = eplb::rebalance_experts(w, 288, 8, 4, 32);
  auto p = ExpertPlacement::from_phy2log(r.phy2log, 256, 32);  // validates: every expert placed, sizes divide
  for (int l = 0; l < 3; ++l) {
    for (int e = 0; e < 256; ++e) EXPECT_EQ(p.logcnt(l)[e], r.logcnt[size_t(l)][size_t(e)]);
    auto before = eplb::gpu_loads_without_eplb(w[size_t(l)], 32);
    auto after = eplb::gpu_loads(w[size_t(l)], r.phy2log[size_t(l)], r.logcnt[size_t(l)], 32);
    EXPECT_NEAR(std::accumulate(before.begin(), before.end(), 0.0), std::accumulate(after.begin(), after.end(), 0.0),
                1e-6 * std::accumulate(before.begin(), before.end(), 0.0));
    EXPECT_LT(*std::max_element(after.begin(), after.end()), *std::max_element(before.begin(), before.end()));
  }
}

TEST(Eplb, RejectsImpossibleShapes) {
  EXPECT_THROW(eplb::rebalance_experts(kReadmeWeight, 15, 4, 2, 8), Error);  // 15 replicas over 8 GPUs
  EXPECT_THROW(eplb::rebalance_experts(kReadmeWeight, 8, 4, 2, 8), Error);   // fewer replicas than experts
  EXPECT_THROW(eplb::rebalance_experts(kReadmeWeight, 16, 5, 5, 8), Error);  // 12 experts in 5 groups
  EXPECT_THROW(eplb::rebalance_experts(kReadmeWeight, 16, 4, 2, 0), Error);
  EXPECT_THROW(eplb::rebalance_experts({{1, -2}}, 2, 1, 1, 1), Error);
  EXPECT_THROW(eplb::rebalance_experts({{1, 2}, {3}}, 2, 1, 1, 1), Error);
  EXPECT_THROW(eplb::rebalance_experts({}, 2, 1, 1, 1), Error);
}

}  // namespace
}  // namespace deepmoe
