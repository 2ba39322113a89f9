// Live rebalance: statistics → EPLB placement → weights moved between thread ranks → the next batch gives the
// same results bitwise.
#include <gtest/gtest.h>

#include <cstring>
#include <mutex>

#include "core/error.h"
#include "dispatch_test_util.h"
#include "parallel/expert_load_stats.h"
#include "parallel/expert_migration.h"
#include "parallel/thread_communicator.h"

namespace deepmoe {
namespace {

constexpr int64_t kBlob = 40;  // bytes of one expert's weights in this test
char blob_byte(int logical, int64_t i) { return char((logical * 13 + i * 7) & 0xFF); }

TEST(ExpertMigration, EverySlotReceivesItsExpertsWeights) {
  for (int R : {1, 2, 4}) {
    const int E = 12;
    auto old_p = ExpertPlacement::uniform(2, E, R, R == 1 ? 0 : 4);
    // New placement: a permutation with other redundant choices.
    std::vector<std::vector<int>> rows(2);
    for (int l = 0; l < 2; ++l)
      for (int i = 0; i < E + 4 * (R > 1); ++i) rows[size_t(l)].push_back((i * 5 + l) % E);
    auto new_p = ExpertPlacement::from_phy2log(rows, E, R);
    run_thread_ranks(R, [&](Communicator& comm) {
      for (int layer = 0; layer < 2; ++layer) {
        std::vector<char> old_slots(size_t(old_p.slots_per_rank() * kBlob)), new_slots(size_t(new_p.slots_per_rank() * kBlob), 0);
        for (int s = 0; s < old_p.slots_per_rank(); ++s)
          for (int64_t i = 0; i < kBlob; ++i)
            old_slots[size_t(s * kBlob + i)] = blob_byte(old_p.logical_of_local(layer, comm.rank(), s), i);
        migrate_expert_slots(comm, old_p, new_p, layer, kBlob, old_slots.data(), new_slots.data());
        for (int s = 0; s < new_p.slots_per_rank(); ++s)
          for (int64_t i = 0; i < kBlob; ++i)
            ASSERT_EQ(new_slots[size_t(s * kBlob + i)], blob_byte(new_p.logical_of_local(layer, comm.rank(), s), i))
                << R << " ranks, layer " << layer << " rank " << comm.rank() << " slot " << s;
      }
    });
  }
}

// The per-slot form packs only slots that leave their rank and writes only slots that arrive from another rank.
TEST(ExpertMigration, PerSlotFormCopiesOnlyWhatCrossesRanks) {
  // Rank 0 hosts 0,1 → 1,2 (keeps 1, receives 2); rank 1 hosts 2,3 → 3,0 (keeps 3, receives 0).
  auto old_p = ExpertPlacement::from_phy2log({{0, 1, 2, 3}}, 4, 2);
  auto new_p = ExpertPlacement::from_phy2log({{1, 2, 3, 0}}, 4, 2);
  std::vector<std::vector<int>> packed(2);
  std::vector<std::vector<char>> received(2);
  run_thread_ranks(2, [&](Communicator& comm) {
    const int r = comm.rank();
    std::vector<char> arrived(size_t(kBlob), 0);
    std::vector<void*> dest = {nullptr, nullptr};
    const int arriving_slot = 1;  // on both ranks, new local slot 1 comes from the other rank
    dest[size_t(arriving_slot)] = arrived.data();
    migrate_expert_slots(
        comm, old_p, new_p, 0, kBlob,
        [&](int slot, void* blob) {
          packed[size_t(r)].push_back(slot);
          for (int64_t i = 0; i < kBlob; ++i)
            static_cast<char*>(blob)[i] = blob_byte(old_p.logical_of_local(0, r, slot), i);
        },
        dest);
    received[size_t(r)] = arrived;
  });
  EXPECT_EQ(packed[0], std::vector<int>{0});  // expert 0 leaves rank 0
  EXPECT_EQ(packed[1], std::vector<int>{0});  // expert 2 leaves rank 1
  for (int64_t i = 0; i < kBlob; ++i) {
    EXPECT_EQ(received[0][size_t(i)], blob_byte(2, i));
    EXPECT_EQ(received[1][size_t(i)], blob_byte(0, i));
  }
}

TEST(ExpertMigration, SourcesPreferTheRankItself) {
  auto old_p = ExpertPlacement::from_phy2log({{0, 1, 2, 3}}, 4, 2);
  auto new_p = ExpertPlacement::from_phy2log({{1, 0, 3, 2}}, 4, 2);
  auto plan = plan_slot_sources(old_p, new_p, 0, 0);
  ASSERT_EQ(plan.size(), 2u);
  EXPECT_EQ(plan[0].rank, 0);  // expert 1 was already on rank 0 (local slot 1)
  EXPECT_EQ(plan[0].local_slot, 1);
  EXPECT_EQ(plan[1].local_slot, 0);
  auto other = ExpertPlacement::from_phy2log({{0, 2, 1, 3}}, 4, 2);
  auto plan1 = plan_slot_sources(old_p, other, 0, 0);
  EXPECT_EQ(plan1[1].rank, 1);  // expert 2 comes from rank 1
  EXPECT_EQ(plan1[1].local_slot, 0);
}

TEST(ExpertMigration, RebalanceBetweenBatchesKeepsResultsBitwise) {
  using namespace testing;
  const int R = 4, E = 16, K = 4;
  RoutedBatch b = make_routed_batch(90, 136, E, K, 29);
  const std::vector<float> ref = reference_moe(b, DispatchPayload::FP8, false);
  std::vector<float> y_before(b.x.size()), y_after(b.x.size());
  std::mutex m;
  run_thread_ranks(R, [&](Communicator& comm) {
    ExpertLoadStats stats(1, E, 8);
    auto placement = ExpertPlacement::uniform(1, E, R, 0);
    auto [begin, end] = rank_token_range(b.n_tokens, comm.rank(), R);
    auto s = slice_batch(b, begin, end);
    DispatchOptions o;
    o.stats = &stats;
    auto step = [&](const ExpertPlacement& p, std::vector<float>& y) {
      DispatchResult d = moe_dispatch(comm, p, 0, s.x, s.idx, s.weights, o);
      Tensor out = run_toy_experts(d, p, 0, comm.rank(), false);
      Tensor yr = moe_combine(comm, d.handle, out);
      std::lock_guard lock(m);
      if (end > begin) std::memcpy(y.data() + begin * b.hidden, yr.data<float>(), yr.nbytes());
    };
    step(placement, y_before);
    // Batch boundary: every rank derives the same new placement from its identical statistics.
    ExpertPlacement next = rebalance_placement(stats, R, E + 8, 4, 2);
    std::vector<int64_t> digest;
    for (int p : next.phy2log(0)) digest.push_back(p);
    auto all = comm.all_gather(digest);
    for (int r = 1; r < R; ++r)
      EXPECT_TRUE(std::equal(digest.begin(), digest.end(), all.begin() + r * int64_t(digest.size())));
    std::vector<char> old_w(size_t(placement.slots_per_rank() * 8)), new_w(size_t(next.slots_per_rank() * 8));
    migrate_expert_slots(comm, placement, next, 0, 8, old_w.data(), new_w.data());
    step(next, y_after);
  });
  EXPECT_EQ(std::memcmp(y_before.data(), ref.data(), ref.size() * 4), 0);
  EXPECT_EQ(std::memcmp(y_after.data(), ref.data(), ref.size() * 4), 0);
}

TEST(ExpertMigration, MismatchedPlacementsAreAnError) {
  SingleRankCommunicator comm;
  auto a = ExpertPlacement::uniform(1, 4, 1), b = ExpertPlacement::uniform(1, 5, 1);
  char buf[64];
  EXPECT_THROW(migrate_expert_slots(comm, a, b, 0, 8, buf, buf), Error);
  EXPECT_THROW(migrate_expert_slots(comm, a, a, 0, 0, buf, buf), Error);
}

}  // namespace
}  // namespace deepmoe
