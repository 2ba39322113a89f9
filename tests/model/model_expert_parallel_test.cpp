// Expert parallelism through the model: the MoE layers always run route → dispatch → local experts →
// combine (DESIGN.md §4), so a sequence's logits on 2 or 4 thread ranks (each rank hosting a slice of the experts
// and running its own batch) are bitwise the ones of a single rank — with redundant experts, with the prefill
// split into two overlapped micro-batches, and across a live rebalance that moves expert weights between ranks.
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>

#include "core/error.h"
#include "runtime/executor.h"
#include "parallel/chrome_trace.h"
#include "parallel/expert_load_stats.h"
#include "parallel/expert_placement.h"
#include "parallel/thread_communicator.h"
#include "tiny_checkpoint.h"

namespace deepmoe {
namespace {

using namespace testing_util;
using Floats = std::vector<float>;

const std::string& tiny_model_dir() {
  static const std::string dir = [] {
    std::string d = temp_dir("ep") + "/v3";
    write_tiny_checkpoint(tiny_v3_config(), d, WeightFormat::Fp8, 11);
    return d;
  }();
  return dir;
}

// Rank r's batch: a different sequence per rank (data-parallel attention).
const std::vector<std::vector<int32_t>> kSeqs = {{0, 5, 9, 400, 3}, {0, 77, 78}, {0, 1, 2, 3, 4, 5, 6}, {0, 300}};

Floats to_vector(const Tensor& t) { return Floats(t.data<float>(), t.data<float>() + t.numel()); }

bool bitwise_equal(const Floats& a, const Floats& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

ExecutorOptions options(int redundant, int micro_batches) {
  ExecutorOptions o;
  o.threads = 1;
  o.redundant_experts = redundant;
  o.micro_batches = micro_batches;
  return o;
}

// Every position's logits of each sequence, one sequence per forward call on a single rank.
std::vector<Floats> single_rank_logits(const ExecutorOptions& o) {
  auto model = Executor::load(tiny_model_dir(), o);
  std::vector<Floats> out;
  for (const auto& t : kSeqs) {
    auto s = model->create_sequence();
    out.push_back(to_vector(model->forward({SequenceInput::all(s.get(), t)})));
  }
  return out;
}

TEST(ModelExpertParallel, ThreadRanksGiveSingleRankLogitsBitwise) {
  const std::vector<Floats> single = single_rank_logits(options(0, 1));
  // Redundant experts (16 + 4 slots) and the two-micro-batch schedule change where tokens go and in which order
  // ranks compute, never a result.
  for (int redundant : {0, 4})
    for (int micro_batches : {1, 2})
      for (int ranks : {1, 2, 4}) {
        std::vector<Floats> got(static_cast<size_t>(ranks));
        run_thread_ranks(ranks, [&](Communicator& comm) {
          auto model = Executor::load(tiny_model_dir(), options(redundant, micro_batches), comm);
          EXPECT_EQ(model->placement().slots_per_rank(), (16 + redundant) / ranks);
          auto s = model->create_sequence();
          got[size_t(comm.rank())] = to_vector(model->forward({SequenceInput::all(s.get(), kSeqs[size_t(comm.rank())])}));
        });
        for (int r = 0; r < ranks; ++r)
          EXPECT_TRUE(bitwise_equal(got[size_t(r)], single[size_t(r)]))
              << ranks << " ranks, rank " << r << ", redundant " << redundant << ", micro-batches " << micro_batches;
      }
}

TEST(ModelExpertParallel, RedundantExpertsNeedSlotsThatDivideOverRanks) {
  try {
    run_thread_ranks(4, [&](Communicator& comm) { Executor::load(tiny_model_dir(), options(2, 1), comm); });
    FAIL() << "16 + 2 slots over 4 ranks was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("do not divide over 4 ranks"), std::string::npos) << e.what();
  }
}

// A batch of several sequences, some already decoding: the two-micro-batch split cuts the flattened rows where
// attention work balances (inside the long prompt here), and must not change a bit of any sequence's logits.
TEST(ModelExpertParallel, TwoMicroBatchesAreBitwiseTheSingleBatch) {
  std::vector<std::vector<Floats>> runs;
  for (int micro_batches : {1, 2}) {
    auto model = Executor::load(tiny_model_dir(), options(0, micro_batches));
    std::vector<std::unique_ptr<Sequence>> seqs;
    for (int i = 0; i < 3; ++i) seqs.push_back(model->create_sequence());
    std::vector<Floats> out;
    out.push_back(to_vector(model->forward({SequenceInput::all(seqs[0].get(), kSeqs[2])})));
    // One sequence decodes a token while two others prefill.
    out.push_back(to_vector(model->forward({SequenceInput::all(seqs[1].get(), {0, 9, 8, 7, 6, 5, 4, 3, 2, 1, 11}),
                                            SequenceInput::all(seqs[0].get(), {42}),
                                            SequenceInput::all(seqs[2].get(), kSeqs[0])})));
    // Decode steps: one token per sequence (three rows split 2/1 or 1/2).
    out.push_back(to_vector(model->forward({SequenceInput::all(seqs[0].get(), {7}),
                                            SequenceInput::all(seqs[1].get(), {8}),
                                            SequenceInput::all(seqs[2].get(), {9})})));
    out.push_back(to_vector(model->forward({SequenceInput::all(seqs[1].get(), {10})})));
    runs.push_back(std::move(out));
  }
  for (size_t i = 0; i < runs[0].size(); ++i) EXPECT_TRUE(bitwise_equal(runs[0][i], runs[1][i])) << "call " << i;
}

// The MTP module's MoE block goes through the same micro-batch schedule.
TEST(ModelExpertParallel, MtpWithTwoMicroBatchesIsBitwiseTheSingleBatch) {
  std::vector<Floats> runs;
  for (int micro_batches : {1, 2}) {
    auto model = Executor::load(tiny_model_dir(), options(0, micro_batches));
    ASSERT_TRUE(model->has_mtp());
    auto s = model->create_sequence();
    const std::vector<int32_t>& t = kSeqs[2];
    Tensor hidden;
    model->forward({SequenceInput::all(s.get(), t)}, &hidden);  // [7, hidden]
    const int64_t n = int64_t(t.size()) - 1;
    Tensor h = Tensor::zeros(DType::F32, {n, hidden.dim(1)});
    std::copy_n(hidden.data<float>(), h.numel(), h.data<float>());
    MtpInput in{s.get(), h, {t.begin() + 1, t.end()}, {}};
    for (int64_t i = 0; i < n; ++i) in.logit_indices.push_back(i);
    runs.push_back(to_vector(model->forward_mtp({in})));
  }
  EXPECT_TRUE(bitwise_equal(runs[0], runs[1]));
}

// Dispatch records the GLOBAL tokens per logical expert, so every rank holds the statistics that one rank running
// all the sequences in one batch records, whatever the placement or micro-batching.
TEST(ModelExpertParallel, LoadStatisticsAreGlobalAndIdenticalOnEveryRank) {
  auto reference = Executor::load(tiny_model_dir(), options(0, 1));
  {
    std::vector<std::unique_ptr<Sequence>> seqs;
    std::vector<SequenceInput> batch;
    for (const auto& t : kSeqs) {
      seqs.push_back(reference->create_sequence());
      batch.push_back(SequenceInput::last(seqs.back().get(), t));
    }
    reference->forward(batch);
  }
  const ExpertLoadStats& want = reference->load_stats();
  int64_t tokens = 0;
  for (const auto& t : kSeqs) tokens += int64_t(t.size());
  ASSERT_EQ(want.n_layers(), 3);  // 2 MoE layers + the MTP layer (not run by forward)
  for (int l = 0; l < 2; ++l) {
    const auto load = want.window_load(l);
    EXPECT_EQ(std::accumulate(load.begin(), load.end(), int64_t(0)), tokens * 4) << "layer " << l;  // top-4
  }
  EXPECT_EQ(want.batches_in_window(2), 0);
  for (int micro_batches : {1, 2}) {
    run_thread_ranks(4, [&](Communicator& comm) {
      auto model = Executor::load(tiny_model_dir(), options(4, micro_batches), comm);
      auto s = model->create_sequence();
      model->forward({SequenceInput::last(s.get(), kSeqs[size_t(comm.rank())])});
      for (int l = 0; l < 3; ++l)
        EXPECT_EQ(model->load_stats().window_load(l), want.window_load(l))
            << "rank " << comm.rank() << " layer " << l << " micro-batches " << micro_batches;
      // Both micro-batches' dispatches count as one batch of the window.
      EXPECT_EQ(model->load_stats().batches_in_window(0), 1);
    });
  }
}

// Decoding a request across a live rebalance: its logits at every step equal those of an uninterrupted
// single-rank run, while the experts have moved between ranks.
constexpr int kStepsBefore = 2, kStepsAfter = 3;
int32_t decode_token(int rank, int step) { return int32_t(17 + 31 * rank + 7 * step); }

// Per rank: the prompt's logits, then each decode step's, on one rank without any rebalance.
std::vector<std::vector<Floats>> uninterrupted_decode() {
  std::vector<std::vector<Floats>> want(4);
  auto model = Executor::load(tiny_model_dir(), options(0, 1));
  for (int r = 0; r < 4; ++r) {
    auto s = model->create_sequence();
    want[size_t(r)].push_back(to_vector(model->forward({SequenceInput::all(s.get(), kSeqs[size_t(r)])})));
    for (int step = 0; step < kStepsBefore + kStepsAfter; ++step)
      want[size_t(r)].push_back(to_vector(model->forward({SequenceInput::last(s.get(), {decode_token(r, step)})})));
  }
  return want;
}

TEST(ModelExpertParallel, RequestDecodedAcrossARebalanceKeepsItsLogits) {
  const auto want = uninterrupted_decode();
  for (int redundant : {0, 4})
    for (int ranks : {1, 2, 4}) {
      std::vector<std::vector<Floats>> got(static_cast<size_t>(ranks));
      std::vector<int> moved_slots(static_cast<size_t>(ranks), 0);
      run_thread_ranks(ranks, [&](Communicator& comm) {
        const int r = comm.rank();
        auto model = Executor::load(tiny_model_dir(), options(redundant, 2), comm);
        auto s = model->create_sequence();
        auto& out = got[size_t(r)];
        out.push_back(to_vector(model->forward({SequenceInput::all(s.get(), kSeqs[size_t(r)])})));
        for (int step = 0; step < kStepsBefore; ++step)
          out.push_back(to_vector(model->forward({SequenceInput::last(s.get(), {decode_token(r, step)})})));
        const ExpertPlacement before = model->placement();
        EXPECT_EQ(model->moved_expert_bytes(), 0u);
        model->rebalance();
        const ExpertPlacement& after = model->placement();
        EXPECT_EQ(after.n_physical(), 16 + redundant);
        // Owned copies only for slots whose expert this rank did not host before (they came from another rank).
        int received = 0;
        for (int l = 0; l < after.n_layers(); ++l) {
          for (int slot = 0; slot < after.slots_per_rank(); ++slot) {
            moved_slots[size_t(r)] += after.logical_of_local(l, r, slot) != before.logical_of_local(l, r, slot);
            bool hosted = false;
            for (int old = 0; old < before.slots_per_rank(); ++old)
              hosted |= before.logical_of_local(l, r, old) == after.logical_of_local(l, r, slot);
            received += !hosted;
          }
        }
        if (ranks == 1) EXPECT_EQ(received, 0);
        EXPECT_EQ(model->moved_expert_bytes() > 0, received > 0) << "rank " << r << ": " << received << " received";
        for (int step = kStepsBefore; step < kStepsBefore + kStepsAfter; ++step)
          out.push_back(to_vector(model->forward({SequenceInput::last(s.get(), {decode_token(r, step)})})));
      });
      int moved = 0;
      for (int r = 0; r < ranks; ++r) {
        moved += moved_slots[size_t(r)];
        ASSERT_EQ(got[size_t(r)].size(), want[size_t(r)].size());
        for (size_t i = 0; i < want[size_t(r)].size(); ++i)
          EXPECT_TRUE(bitwise_equal(got[size_t(r)][i], want[size_t(r)][i]))
              << ranks << " ranks, redundant " << redundant << ", rank " << r << ", call " << i;
      }
      // The skewed statistics of this workload make EPLB move experts (the test would be vacuous otherwise).
      if (ranks > 1) EXPECT_GT(moved, 0) << ranks << " ranks, redundant " << redundant;
    }
}

// ExecutorOptions::rebalance_every: the model rebalances by itself at batch boundaries (here before the 3rd and 5th
// forward call), with the same logits as ever.
TEST(ModelExpertParallel, PeriodicRebalanceKeepsLogits) {
  const auto want = uninterrupted_decode();
  const int ranks = 4;
  std::vector<std::vector<Floats>> got(ranks);
  std::vector<int> placements_seen(ranks, 0);
  run_thread_ranks(ranks, [&](Communicator& comm) {
    const int r = comm.rank();
    ExecutorOptions o = options(4, 0);
    o.rebalance_every = 2;
    auto model = Executor::load(tiny_model_dir(), o, comm);
    auto s = model->create_sequence();
    auto& out = got[size_t(r)];
    ExpertPlacement last = model->placement();
    out.push_back(to_vector(model->forward({SequenceInput::all(s.get(), kSeqs[size_t(r)])})));
    for (int step = 0; step < kStepsBefore + kStepsAfter; ++step) {
      out.push_back(to_vector(model->forward({SequenceInput::last(s.get(), {decode_token(r, step)})})));
      if (!(model->placement() == last)) ++placements_seen[size_t(r)], last = model->placement();
    }
  });
  for (int r = 0; r < ranks; ++r) {
    EXPECT_GE(placements_seen[size_t(r)], 1) << "rank " << r << ": the placement never changed";
    for (size_t i = 0; i < want[size_t(r)].size(); ++i)
      EXPECT_TRUE(bitwise_equal(got[size_t(r)][i], want[size_t(r)][i])) << "rank " << r << ", call " << i;
  }
}

// apply_placement with an arbitrary placement (every rank's slots reversed and rotated to the next rank, so all
// expert weights cross ranks) and a different number of redundant slots.
TEST(ModelExpertParallel, ApplyPlacementMovesEveryExpertAndKeepsLogits) {
  const std::vector<Floats> single = single_rank_logits(options(0, 1));
  const int ranks = 2;
  std::vector<Floats> got(ranks);
  run_thread_ranks(ranks, [&](Communicator& comm) {
    auto model = Executor::load(tiny_model_dir(), options(0, 1), comm);
    const int layers = model->placement().n_layers();
    std::vector<std::vector<int>> phy2log(static_cast<size_t>(layers));
    for (int l = 0; l < layers; ++l) {
      for (int p = 0; p < 16; ++p) phy2log[size_t(l)].push_back((p + 8 + l) % 16);
      phy2log[size_t(l)].push_back(l);  // two redundant replicas: 18 slots, 9 per rank
      phy2log[size_t(l)].push_back(15 - l);
    }
    model->apply_placement(ExpertPlacement::from_phy2log(phy2log, 16, ranks));
    EXPECT_EQ(model->placement().slots_per_rank(), 9);
    auto s = model->create_sequence();
    got[size_t(comm.rank())] = to_vector(model->forward({SequenceInput::all(s.get(), kSeqs[size_t(comm.rank())])}));
  });
  for (int r = 0; r < ranks; ++r) EXPECT_TRUE(bitwise_equal(got[size_t(r)], single[size_t(r)])) << "rank " << r;
}

TEST(ModelExpertParallel, ApplyPlacementRejectsAPlacementOfAnotherShape) {
  auto model = Executor::load(tiny_model_dir(), options(0, 1));
  for (const ExpertPlacement& bad : {ExpertPlacement::uniform(3, 16, 2), ExpertPlacement::uniform(2, 16, 1),
                                     ExpertPlacement::uniform(3, 8, 1)}) {
    try {
      model->apply_placement(bad);
      ADD_FAILURE() << "accepted a placement of " << bad.n_layers() << " layers, " << bad.n_logical()
                    << " experts, " << bad.n_ranks() << " ranks";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("the model needs 3, 16 and 1"), std::string::npos) << e.what();
    }
  }
  // The model still runs on its old placement.
  auto s = model->create_sequence();
  EXPECT_EQ(model->forward({SequenceInput::last(s.get(), kSeqs[0])}).dim(0), 1);
}

TEST(ModelExpertParallel, TraceHasComputeAndCommunicationSpansPerMicroBatch) {
  std::vector<std::string> json(2);
  run_thread_ranks(2, [&](Communicator& comm) {
    auto model = Executor::load(tiny_model_dir(), options(0, 2), comm);
    TraceRecorder trace(comm.rank(), CommClock::now());
    model->set_trace(&trace);
    auto s = model->create_sequence();
    model->forward({SequenceInput::last(s.get(), kSeqs[size_t(comm.rank())])});
    json[size_t(comm.rank())] = trace.events_json();
    EXPECT_GT(trace.lane_total_us(TraceLane::Comm), 0.0);
  });
  for (const std::string& j : json)
    for (const char* want : {"\"attention\"", "\"gate\"", "\"experts\"", "\"shared\"", "\"dispatch\"",
                             "\"combine\"", "\"micro_batch\":0", "\"micro_batch\":1"})
      EXPECT_NE(j.find(want), std::string::npos) << want;
}

}  // namespace
}  // namespace deepmoe
