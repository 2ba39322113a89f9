// Dispatch → experts → combine on 1, 2 and 4 thread ranks against plain-loop references: DeepEP's round-trip
// criterion, bitwise identity across rank counts and placements, the layout, the replica split and the checks
// on bad input.
#include <gtest/gtest.h>

#include <cstring>
#include <mutex>
#include <numeric>
#include <random>
#include <set>

#include "core/dtype.h"
#include "core/error.h"
#include "dispatch_test_util.h"
#include "parallel/eplb.h"
#include "parallel/expert_load_stats.h"
#include "parallel/thread_communicator.h"

namespace deepmoe {
namespace {

using testing::calc_diff;
using testing::make_routed_batch;
using testing::rank_token_range;
using testing::RoutedBatch;
using testing::slice_batch;
using testing::reference_moe;

constexpr int kExperts = 16, kTopk = 4;
constexpr int64_t kTokens = 67, kHidden = 200;  // hidden not a multiple of 128: a partial FP8 tile

// Runs one MoE step of the whole batch over n_ranks thread ranks; returns y [T, H] assembled from every rank.
std::vector<float> run_moe(RoutedBatch& b, int n_ranks, const ExpertPlacement& placement, DispatchOptions options,
                           bool identity, std::vector<DispatchLayout>* layouts = nullptr) {
  std::vector<float> y(b.x.size(), std::nanf(""));
  std::mutex m;
  if (layouts) layouts->assign(size_t(n_ranks), {});
  run_thread_ranks(n_ranks, [&](Communicator& comm) {
    auto [begin, end] = rank_token_range(b.n_tokens, comm.rank(), comm.size());
    auto s = slice_batch(b, begin, end);
    DispatchResult d = moe_dispatch(comm, placement, 0, s.x, s.idx, s.weights, options);
    // Received rows are grouped by local slot, and each row's expert really is routed there.
    EXPECT_EQ(d.row_offsets.size(), size_t(placement.slots_per_rank() + 1));
    EXPECT_EQ(d.row_offsets.back(), d.x.dim(0));
    Tensor out = testing::run_toy_experts(d, placement, 0, comm.rank(), identity);
    Tensor yr = moe_combine(comm, d.handle, out);
    std::lock_guard lock(m);
    if (end > begin) std::memcpy(y.data() + begin * b.hidden, yr.data<float>(), size_t(yr.nbytes()));
    if (layouts) (*layouts)[size_t(comm.rank())] = d.layout;
  });
  return y;
}

struct Case {
  DispatchPayload payload;
  int ranks;
};

class RoundTrip : public ::testing::TestWithParam<Case> {};

TEST_P(RoundTrip, IdentityExpertsMeetDeepEpCriterion) {
  const auto [payload, ranks] = GetParam();
  RoutedBatch b = make_routed_batch(kTokens, kHidden, kExperts, kTopk, 11);
  auto placement = ExpertPlacement::uniform(1, kExperts, ranks, 0);
  DispatchOptions o;
  o.payload = payload;
  std::vector<float> y = run_moe(b, ranks, placement, o, true);
  // DeepEP low-latency test: combined ≈ x · Σ valid weights.
  std::vector<double> expect(b.x.size());
  for (int64_t t = 0; t < b.n_tokens; ++t) {
    double wsum = 0;
    for (int j = 0; j < kTopk; ++j)
      if (b.idx[size_t(t * kTopk + j)] >= 0) wsum += b.weights[size_t(t * kTopk + j)];
    for (int64_t i = 0; i < kHidden; ++i) expect[size_t(t * kHidden + i)] = double(b.x[size_t(t * kHidden + i)]) * wsum;
  }
  const double diff = calc_diff(y.data(), expect.data(), y.size());
  EXPECT_LT(diff, payload == DispatchPayload::FP8 ? 9e-4 : 5e-6) << "calc_diff " << diff;
  // And exactly the plain-loop reference of the same arithmetic.
  std::vector<float> ref = reference_moe(b, payload, true);
  EXPECT_EQ(std::memcmp(y.data(), ref.data(), y.size() * 4), 0);
}

INSTANTIATE_TEST_SUITE_P(PayloadsAndRanks, RoundTrip,
                         ::testing::Values(Case{DispatchPayload::F32, 1}, Case{DispatchPayload::F32, 2},
                                           Case{DispatchPayload::F32, 4}, Case{DispatchPayload::BF16, 1},
                                           Case{DispatchPayload::BF16, 2}, Case{DispatchPayload::BF16, 4},
                                           Case{DispatchPayload::FP8, 1}, Case{DispatchPayload::FP8, 2},
                                           Case{DispatchPayload::FP8, 4}));

TEST(MoeDispatch, BitwiseIdenticalAcrossRankCountsAndPlacements) {
  RoutedBatch b = make_routed_batch(kTokens, kHidden, kExperts, kTopk, 5);
  DispatchOptions o;  // FP8 payload, F32 combine
  const std::vector<float> ref = reference_moe(b, DispatchPayload::FP8, false);
  for (int ranks : {1, 2, 4}) {
    for (int redundant : {0, 4, 8}) {
      auto placement = ExpertPlacement::uniform(1, kExperts, ranks, redundant);
      for (bool balance : {true, false}) {
        o.balance_replicas = balance;
        std::vector<float> y = run_moe(b, ranks, placement, o, false);
        EXPECT_EQ(std::memcmp(y.data(), ref.data(), y.size() * 4), 0)
            << ranks << " ranks, " << redundant << " redundant, balance " << balance;
      }
    }
  }
}

TEST(MoeDispatch, Ue8m0ScalesArePowersOfTwo) {
  RoutedBatch b = make_routed_batch(9, 256, 8, 2, 3);
  auto placement = ExpertPlacement::uniform(1, 8, 1, 0);
  SingleRankCommunicator comm;
  auto s = slice_batch(b, 0, 9);
  DispatchOptions o;
  o.ue8m0_scales = true;
  DispatchResult d = moe_dispatch(comm, placement, 0, s.x, s.idx, s.weights, o);
  ASSERT_EQ(d.x_scales.dim(1), 2);
  for (int64_t i = 0; i < d.x_scales.numel(); ++i) {
    int exp = 0;
    EXPECT_EQ(std::frexp(d.x_scales.data<float>()[i], &exp), 0.5f);
  }
  // x = x_fp8 · scale for every row.
  for (int64_t r = 0; r < d.x.dim(0); ++r)
    for (int64_t i = 0; i < 256; ++i)
      EXPECT_EQ(d.x.data<float>()[r * 256 + i],
                fp8_e4m3_to_f32(d.x_fp8.data<uint8_t>()[r * 256 + i]) * d.x_scales.data<float>()[r * 2 + i / 128]);
}

TEST(MoeDispatch, LayoutMatchesPlainCount) {
  RoutedBatch b = make_routed_batch(kTokens, kHidden, kExperts, kTopk, 7);
  const int R = 4;
  auto placement = ExpertPlacement::uniform(1, kExperts, R, 4);
  std::vector<DispatchLayout> layouts;
  run_moe(b, R, placement, {}, true, &layouts);
  for (int r = 0; r < R; ++r) {
    auto [begin, end] = rank_token_range(b.n_tokens, r, R);
    const DispatchLayout& L = layouts[size_t(r)];
    std::vector<int64_t> tokens(R, 0), entries(R, 0);
    for (int64_t t = 0; t < end - begin; ++t) {
      std::vector<bool> in(R, false);
      for (int j = 0; j < kTopk; ++j) {
        const int64_t e = b.idx[size_t((begin + t) * kTopk + j)];
        const int slot = L.slot_of_pair[size_t(t * kTopk + j)];
        if (e < 0) {
          EXPECT_EQ(slot, -1);
          continue;
        }
        ASSERT_GE(slot, 0);
        EXPECT_EQ(placement.phy2log(0)[size_t(slot)], e) << "token " << t << " sent to a slot of another expert";
        in[size_t(placement.rank_of_slot(slot))] = true;
        ++entries[size_t(placement.rank_of_slot(slot))];
      }
      for (int q = 0; q < R; ++q) {
        EXPECT_EQ(bool(L.token_in_rank[size_t(t * R + q)]), in[size_t(q)]);
        tokens[size_t(q)] += in[size_t(q)];
      }
    }
    EXPECT_EQ(L.tokens_per_rank, tokens);
    EXPECT_EQ(L.entries_per_rank, entries);
  }
}

TEST(ReplicaQuotas, WaterFillsTheLeastLoadedRanks) {
  // 4 ranks × 2 slots; expert 0 has replicas on ranks 0 and 3 (slots 0 and 6), expert 1 on ranks 0 and 3 too.
  auto p = ExpertPlacement::from_phy2log({{0, 2, 3, 4, 5, 1, 0, 1}}, 6, 4);
  // Unreplicated loads: rank0 {2:10}=10, rank1 {3:4,4:6}=10, rank2 {5:30,1?}... expert 1 replicas: slots 5, 7.
  std::vector<int64_t> tokens = {100, 20, 10, 4, 6, 30};
  auto q = replica_quotas(p, 0, tokens);
  // Base loads: rank0 = 10 (expert 2), rank1 = 10 (3, 4), rank2 = 30 (5), rank3 = 0.
  // Expert 0 (100 tokens, ranks 0 and 3): levels 10 and 0 → (100 + 10) / 2 = 55 each: rank0 +45, rank3 +55.
  // Expert 1 (20 tokens, ranks 2 and 3 via slots 5 and 7): loads 30 and 55 → all 20 to rank 2.
  EXPECT_EQ(q, (std::vector<int64_t>{45, 10, 4, 6, 30, 20, 55, 0}));
  auto unbalanced = replica_quotas(p, 0, tokens, false);
  EXPECT_EQ(unbalanced, (std::vector<int64_t>{100, 10, 4, 6, 30, 20, 0, 0}));
}

TEST(ReplicaQuotas, OddRemainderGoesToTheLowerRank) {
  auto p = ExpertPlacement::from_phy2log({{0, 0}}, 1, 2);
  EXPECT_EQ(replica_quotas(p, 0, std::vector<int64_t>{7}), (std::vector<int64_t>{4, 3}));
  EXPECT_EQ(replica_quotas(p, 0, std::vector<int64_t>{0}), (std::vector<int64_t>{0, 0}));
}

TEST(ReplicaQuotas, NeverWorseThanEplbEqualSplit) {
  // Random skewed loads on EPLB placements: the busiest rank under the quotas is at most the busiest rank under
  // EPLB's equal split per replica (up to one token of integer rounding per replicated expert).
  std::mt19937 rng(3);
  for (int trial = 0; trial < 20; ++trial) {
    const int E = 32, R = 4 + 4 * (trial % 2), phys = E + R * (1 + trial % 3);
    std::vector<float> w(E);
    std::vector<int64_t> tokens(E);
    for (int e = 0; e < E; ++e) tokens[size_t(e)] = int64_t(w[size_t(e)] = float(rng() % 1000) * float(e % 5 == 0 ? 9 : 1));
    auto plan = eplb::rebalance_experts({w}, phys, 4, trial % 2 ? 2 : 1, R);
    auto p = ExpertPlacement::from_phy2log(plan.phy2log, E, R);
    auto q = replica_quotas(p, 0, tokens);
    std::vector<double> load(R, 0.0);
    int64_t total = 0;
    for (int s = 0; s < phys; ++s) {
      load[size_t(p.rank_of_slot(s))] += double(q[size_t(s)]);
      total += q[size_t(s)];
    }
    EXPECT_EQ(total, std::accumulate(tokens.begin(), tokens.end(), int64_t(0)));
    auto even = eplb::gpu_loads(w, plan.phy2log[0], plan.logcnt[0], R);
    EXPECT_LE(*std::max_element(load.begin(), load.end()), *std::max_element(even.begin(), even.end()) + E)
        << "trial " << trial;
  }
}

TEST(MoeDispatch, BalancingLowersTheBusiestRank) {
  RoutedBatch b = make_routed_batch(400, 8, kExperts, kTopk, 9);
  const int R = 4;
  // Replicate the hottest experts (0..3, Zipf head) once each.
  auto placement = ExpertPlacement::uniform(1, kExperts, R, 4);
  auto max_rank_load = [&](bool balance) {
    DispatchOptions o;
    o.balance_replicas = balance;
    std::vector<DispatchLayout> layouts;
    run_moe(b, R, placement, o, true, &layouts);
    std::vector<int64_t> load(R, 0);
    for (auto& L : layouts)
      for (int s = 0; s < placement.n_physical(); ++s) load[size_t(placement.rank_of_slot(s))] += L.tokens_per_slot[size_t(s)];
    return *std::max_element(load.begin(), load.end());
  };
  EXPECT_LT(max_rank_load(true), max_rank_load(false));
}

TEST(MoeDispatch, RecordsGlobalLoadOnEveryRank) {
  RoutedBatch b = make_routed_batch(kTokens, 16, kExperts, kTopk, 13);
  std::vector<int64_t> expect(kExperts, 0);
  for (int64_t e : b.idx)
    if (e >= 0) ++expect[size_t(e)];
  run_thread_ranks(3, [&](Communicator& comm) {
    ExpertLoadStats stats(1, kExperts, 4);
    auto placement = ExpertPlacement::uniform(1, kExperts, 3, 2);
    auto [begin, end] = rank_token_range(b.n_tokens, comm.rank(), comm.size());
    auto s = slice_batch(b, begin, end);
    DispatchOptions o;
    o.stats = &stats;
    for (int rep = 0; rep < 2; ++rep) {
      auto d = moe_dispatch(comm, placement, 0, s.x, s.idx, s.weights, o);
      moe_combine(comm, d.handle, d.x);
    }
    auto w = stats.window_load(0);
    for (int e = 0; e < kExperts; ++e) EXPECT_EQ(w[size_t(e)], 2 * expect[size_t(e)]);
    EXPECT_EQ(stats.batches_in_window(0), 2);
  });
}

TEST(MoeDispatch, TwoPhaseOverlapsTwoMicroBatches) {
  RoutedBatch b = make_routed_batch(kTokens, kHidden, kExperts, kTopk, 17);
  auto placement = ExpertPlacement::uniform(1, kExperts, 2, 2);
  const std::vector<float> ref = reference_moe(b, DispatchPayload::FP8, false);
  std::vector<float> y(b.x.size());
  std::mutex m;
  run_thread_ranks(2, [&](Communicator& comm) {
    auto [begin, end] = rank_token_range(b.n_tokens, comm.rank(), 2);
    const int64_t mid = (begin + end) / 2;
    auto s0 = slice_batch(b, begin, mid), s1 = slice_batch(b, mid, end);
    PendingDispatch p0 = moe_dispatch_start(comm, placement, 0, s0.x, s0.idx, s0.weights);
    PendingDispatch p1 = moe_dispatch_start(comm, placement, 0, s1.x, s1.idx, s1.weights);
    DispatchResult d0 = p0.finish();
    PendingCombine c0 = moe_combine_start(comm, d0.handle, testing::run_toy_experts(d0, placement, 0, comm.rank(), false));
    DispatchResult d1 = p1.finish();
    PendingCombine c1 = moe_combine_start(comm, d1.handle, testing::run_toy_experts(d1, placement, 0, comm.rank(), false));
    Tensor y1 = c1.finish(), y0 = c0.finish();
    std::lock_guard lock(m);
    std::memcpy(y.data() + begin * kHidden, y0.data<float>(), y0.nbytes());
    std::memcpy(y.data() + mid * kHidden, y1.data<float>(), y1.nbytes());
  });
  EXPECT_EQ(std::memcmp(y.data(), ref.data(), y.size() * 4), 0);
}

TEST(MoeDispatch, BadInputIsAnError) {
  SingleRankCommunicator comm;
  auto placement = ExpertPlacement::uniform(1, 4, 1, 0);
  std::vector<float> x(2 * 8, 1.0f), w(4, 0.5f);
  std::vector<int64_t> idx = {0, 4, 1, 2};  // expert 4 does not exist
  auto tx = Tensor::view(DType::F32, {2, 8}, x.data());
  auto ti = Tensor::view(DType::I64, {2, 2}, idx.data());
  auto tw = Tensor::view(DType::F32, {2, 2}, w.data());
  try {
    moe_dispatch(comm, placement, 0, tx, ti, tw);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("routes to expert 4"), std::string::npos) << e.what();
  }
  idx[1] = 3;
  EXPECT_THROW(moe_dispatch(comm, placement, 1, tx, ti, tw), Error);  // no such layer
  auto wrong_w = Tensor::view(DType::F32, {2, 1}, w.data());
  EXPECT_THROW(moe_dispatch(comm, placement, 0, tx, ti, wrong_w), Error);
  auto two_rank_placement = ExpertPlacement::uniform(1, 4, 2, 0);
  EXPECT_THROW(moe_dispatch(comm, two_rank_placement, 0, tx, ti, tw), Error);
  auto d = moe_dispatch(comm, placement, 0, tx, ti, tw);
  Tensor wrong_rows = Tensor::zeros(DType::F32, {3, 8});
  EXPECT_THROW(moe_combine(comm, d.handle, wrong_rows), Error);
}

}  // namespace
}  // namespace deepmoe

namespace deepmoe {
namespace {

TEST(MoeDispatch, NodeLimitedRoutingWithHierarchicalPlacement) {
  // 16 experts in 4 groups; 2 nodes × 2 ranks; EPLB's hierarchical policy packs whole groups onto nodes and keeps
  // replicas inside them, so a token whose experts come from topk_group = 1 group reaches exactly one node.
  const int E = 16, R = 4, ranks_per_node = 2, K = 3;
  std::vector<float> load(E);
  for (int e = 0; e < E; ++e) load[size_t(e)] = float((e * 7) % 11 + 1) * (e == 5 ? 10.0f : 1.0f);
  auto plan = eplb::rebalance_experts({load}, E + 4, 4, 2, R);
  auto placement = ExpertPlacement::from_phy2log(plan.phy2log, E, R);
  const int64_t T = 50;
  std::vector<int64_t> idx(size_t(T * K));
  for (int64_t t = 0; t < T; ++t) {
    const int g = int(t % 4);
    for (int j = 0; j < K; ++j) idx[size_t(t * K + j)] = g * 4 + (j + t) % 4;
  }
  std::vector<int64_t> counts(size_t(R * E), 0);
  for (int64_t e : idx) ++counts[size_t(e)];  // all tokens on rank 0 of the count matrix
  auto L = compute_dispatch_layout(placement, 0, idx, T, K, 0, counts, true);
  for (int64_t t = 0; t < T; ++t) {
    std::set<int> nodes;
    for (int r = 0; r < R; ++r)
      if (L.token_in_rank[size_t(t * R + r)]) nodes.insert(r / ranks_per_node);
    EXPECT_EQ(nodes.size(), 1u) << "token " << t;
  }
}

}  // namespace
}  // namespace deepmoe
