#include <gtest/gtest.h>

#include "core/error.h"
#include "parallel/expert_placement.h"

namespace deepmoe {
namespace {

TEST(ExpertPlacement, UniformWithoutRedundancy) {
  auto p = ExpertPlacement::uniform(3, 8, 4);
  EXPECT_EQ(p.n_layers(), 3);
  EXPECT_EQ(p.n_physical(), 8);
  EXPECT_EQ(p.slots_per_rank(), 2);
  for (int l = 0; l < 3; ++l)
    for (int e = 0; e < 8; ++e) {
      ASSERT_EQ(p.replicas(l, e).size(), 1u);
      EXPECT_EQ(p.replicas(l, e)[0], e);
      EXPECT_EQ(p.logcnt(l)[e], 1);
    }
  EXPECT_EQ(p.rank_of_slot(5), 2);
  EXPECT_EQ(p.local_index_of_slot(5), 1);
  EXPECT_EQ(p.logical_of_local(0, 3, 1), 7);
}

TEST(ExpertPlacement, UniformWithRedundantReplicas) {
  auto p = ExpertPlacement::uniform(1, 6, 4, 2);  // 8 slots, experts 0 and 1 twice
  EXPECT_EQ(p.n_physical(), 8);
  EXPECT_EQ(p.max_replicas(0), 2);
  EXPECT_EQ(std::vector<int>(p.replicas(0, 0).begin(), p.replicas(0, 0).end()), (std::vector<int>{0, 6}));
  EXPECT_EQ(std::vector<int>(p.replicas(0, 1).begin(), p.replicas(0, 1).end()), (std::vector<int>{1, 7}));
  EXPECT_EQ(p.log2phy_padded(0), (std::vector<int>{0, 6, 1, 7, 2, -1, 3, -1, 4, -1, 5, -1}));
  EXPECT_EQ(p.logcnt(0)[0], 2);
  EXPECT_EQ(p.logcnt(0)[5], 1);
}

TEST(ExpertPlacement, FromPhy2LogMatchesEplbLayout) {
  // EPLB README example, layer 0 (reference §3): GPU g holds slots [2g, 2g+2).
  std::vector<std::vector<int>> phy2log = {{5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1}};
  auto p = ExpertPlacement::from_phy2log(phy2log, 12, 8);
  EXPECT_EQ(std::vector<int>(p.logcnt(0).begin(), p.logcnt(0).end()),
            (std::vector<int>{1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1}));
  EXPECT_EQ(std::vector<int>(p.replicas(0, 1).begin(), p.replicas(0, 1).end()), (std::vector<int>{13, 15}));
  EXPECT_EQ(p.rank_of_slot(13), 6);
}

TEST(ExpertPlacement, RejectsInvalidMaps) {
  EXPECT_THROW(ExpertPlacement::from_phy2log({{0, 1, 2}}, 4, 1), Error);        // too few slots
  EXPECT_THROW(ExpertPlacement::from_phy2log({{0, 1, 2, 2}}, 4, 1), Error);     // expert 3 missing
  EXPECT_THROW(ExpertPlacement::from_phy2log({{0, 1, 2, 4}}, 4, 1), Error);     // id out of range
  EXPECT_THROW(ExpertPlacement::from_phy2log({{0, 1, 2, -1}}, 4, 1), Error);
  EXPECT_THROW(ExpertPlacement::from_phy2log({{0, 1, 2, 3, 0}}, 4, 2), Error);  // 5 slots over 2 ranks
  EXPECT_THROW(ExpertPlacement::from_phy2log({{0, 1, 2, 3}, {0, 1, 2}}, 4, 1), Error);
  EXPECT_THROW(ExpertPlacement::from_phy2log({}, 4, 1), Error);
  EXPECT_THROW(ExpertPlacement::uniform(1, 6, 4, 0), Error);  // 6 over 4 ranks
  try {
    ExpertPlacement::from_phy2log({{0, 1, 2, 2}}, 4, 1);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no slot for logical expert 3"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace deepmoe
