// Expert parallelism through the model: the MoE layers always run route → dispatch → local experts → combine
// (DESIGN.md §4), so a sequence's logits on 2 or 4 thread ranks (each rank hosting a slice of the experts and
// running its own batch) are bitwise the ones of a single rank.
#include <gtest/gtest.h>

#include <cstring>
#include <mutex>

#include "model/deepseek_model.h"
#include "parallel/thread_communicator.h"
#include "tiny_checkpoint.h"

namespace deepmoe {
namespace {

using namespace testing_util;

TEST(ModelExpertParallel, ThreadRanksGiveSingleRankLogitsBitwise) {
  const std::string dir = temp_dir("ep") + "/v3";
  write_tiny_checkpoint(tiny_v3_config(), dir, WeightFormat::Fp8, 11);
  // Rank r's batch: a different sequence per rank (data-parallel attention).
  const std::vector<std::vector<int32_t>> seqs = {{0, 5, 9, 400, 3}, {0, 77, 78}, {0, 1, 2, 3, 4, 5, 6}, {0, 300}};
  ModelOptions o;
  o.threads = 1;
  std::vector<std::vector<float>> single;
  {
    auto model = DeepseekModel::load(dir, o);
    for (const auto& t : seqs) {
      auto s = model->create_sequence();
      Tensor l = model->forward({SequenceInput::all(s.get(), t)});
      single.emplace_back(l.data<float>(), l.data<float>() + l.numel());
    }
  }
  for (int ranks : {2, 4}) {
    std::vector<std::vector<float>> got(static_cast<size_t>(ranks));
    run_thread_ranks(ranks, [&](Communicator& comm) {
      auto model = DeepseekModel::load(dir, o, comm);
      auto s = model->create_sequence();
      Tensor l = model->forward({SequenceInput::all(s.get(), seqs[size_t(comm.rank())])});
      got[size_t(comm.rank())].assign(l.data<float>(), l.data<float>() + l.numel());
    });
    for (int r = 0; r < ranks; ++r) {
      ASSERT_EQ(got[size_t(r)].size(), single[size_t(r)].size());
      EXPECT_EQ(std::memcmp(got[size_t(r)].data(), single[size_t(r)].data(), single[size_t(r)].size() * sizeof(float)), 0)
          << ranks << " ranks, rank " << r;
    }
  }
}

}  // namespace
}  // namespace deepmoe
