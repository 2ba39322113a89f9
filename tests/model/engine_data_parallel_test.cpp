// Data-parallel attention (runtime/engine.h): sequences are spread over the ranks, each rank keeps its own
// sequences' KV caches, and the leader gets back the logits and hidden rows in batch order. A fixed script of
// steps — prefill with hidden states of every token, the MTP module on them, truncation of both caches, more
// decode — must give bitwise the rows one process gives, on 2 and 4 thread ranks; prompts that share their first
// block go to the same rank and hit its prefix cache; every block is given back; a bad batch is an error before
// the step, after which the job goes on. The same script in steps of a few positions gives the same rows.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/config.h"
#include "parallel/thread_communicator.h"
#include "runtime/engine.h"
#include "tiny_checkpoint.h"

namespace deepmoe {
namespace {

using namespace testing_util;

const std::string& model_dir() {
  static const std::string dir = [] {
    const std::string d = temp_dir("engine_data_parallel") + "/v3";
    write_tiny_checkpoint(tiny_v3_config(), d, WeightFormat::Fp8, 57);
    return d;
  }();
  return dir;
}

ExecutorOptions options() {
  ExecutorOptions o;
  o.threads = 1;
  return o;
}

std::vector<int32_t> prompt(int64_t n, int32_t seed, int64_t vocab) {
  std::vector<int32_t> p;
  for (int64_t i = 0; i < n; ++i) p.push_back(int32_t((seed * 7919 + i * 104729) % vocab));
  return p;
}

std::vector<float> rows(const Tensor& t) { return std::vector<float>(t.data<float>(), t.data<float>() + t.numel()); }

// What the script produced: every returned tensor in order, and the ranks the sequences were placed on.
struct Script {
  std::vector<std::vector<float>> outputs;
  std::set<int> ranks;
};

Script run_script(Engine& engine) {
  const ModelConfig& c = engine.config();
  const int64_t V = c.vocab_size, H = c.hidden_size;
  Script out;
  std::vector<std::unique_ptr<EngineSequence>> seqs;
  const std::vector<int64_t> lengths = {5, 17, 1, 9, 30};
  for (size_t i = 0; i < lengths.size(); ++i) {
    seqs.push_back(engine.create_sequence());
    out.ranks.insert(seqs.back()->rank());
  }

  // Prefill: logits of the last token, hidden state of every token.
  std::vector<EngineInput> batch;
  for (size_t i = 0; i < seqs.size(); ++i) {
    EngineInput in = EngineInput::last(seqs[i].get(), prompt(lengths[i], int32_t(i) + 1, V));
    in.hidden_of_all_tokens = true;
    batch.push_back(in);
  }
  Tensor hidden;
  out.outputs.push_back(rows(engine.forward(batch, &hidden)));
  out.outputs.push_back(rows(hidden));

  // The MTP module on every position of every sequence but the last one (whose next token is not known).
  std::vector<EngineMtpInput> mtp;
  int64_t at = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const int64_t n = lengths[i];
    if (n > 1) {
      EngineMtpInput in;
      in.sequence = seqs[i].get();
      in.hidden = Tensor::zeros(DType::F32, {n - 1, H});
      std::memcpy(in.hidden.data<float>(), hidden.data<float>() + at * H, size_t((n - 1) * H) * sizeof(float));
      in.next_tokens.assign(batch[i].tokens.begin() + 1, batch[i].tokens.end());
      in.logit_indices = {0, n - 2};
      mtp.push_back(std::move(in));
    }
    at += n;
  }
  Tensor mtp_hidden;
  out.outputs.push_back(rows(engine.forward_mtp(mtp, &mtp_hidden)));
  out.outputs.push_back(rows(mtp_hidden));
  for (auto& s : seqs) out.outputs.push_back({float(s->length()), float(s->mtp.length())});

  // Roll back (as after rejected drafts), then decode three steps of two tokens each.
  seqs[1]->main.truncate(10);
  seqs[1]->mtp.truncate(8);
  seqs[4]->main.truncate(29);
  seqs[3]->mtp.truncate(0);
  for (int step = 0; step < 3; ++step) {
    std::vector<EngineInput> decode;
    for (size_t i = 0; i < seqs.size(); ++i)
      decode.push_back(EngineInput::all(seqs[i].get(), prompt(2, int32_t(100 + 10 * step + int(i)), V)));
    out.outputs.push_back(rows(engine.forward(decode)));
  }
  // Logits asked for out of order, and hidden rows of the same positions.
  std::vector<EngineInput> more;
  for (size_t i = 0; i < seqs.size(); ++i)
    more.push_back(EngineInput{seqs[i].get(), prompt(6, int32_t(200 + i), V), {5, 0, 3}});
  Tensor more_hidden;
  out.outputs.push_back(rows(engine.forward(more, &more_hidden)));
  out.outputs.push_back(rows(more_hidden));
  for (auto& s : seqs) out.outputs.push_back({float(s->length()), float(s->mtp.length())});
  return out;
}

Script on_ranks(int ranks, bool data_parallel = true, int64_t forward_chunk_tokens = 0) {
  Script script;
  ExecutorOptions o = options();
  o.data_parallel_attention = data_parallel;
  o.forward_chunk_tokens = forward_chunk_tokens;
  run_thread_ranks(ranks, [&](Communicator& comm) {
    auto engine = Engine::open(model_dir(), o, comm);
    if (!engine->is_leader()) {
      engine->follow();
      return;
    }
    script = run_script(*engine);
    engine->finish();
  });
  return script;
}

TEST(EngineDataParallel, RowsEqualOneProcessOnTwoAndFourRanks) {
  auto engine = Engine::open(model_dir(), options());
  const Script alone = run_script(*engine);
  EXPECT_EQ(alone.ranks, std::set<int>{0});
  for (int ranks : {2, 4}) {
    const Script spread = on_ranks(ranks);
    EXPECT_EQ(spread.ranks.size(), size_t(ranks)) << "the sequences should be spread over every rank";
    ASSERT_EQ(spread.outputs.size(), alone.outputs.size());
    for (size_t i = 0; i < alone.outputs.size(); ++i)
      EXPECT_EQ(spread.outputs[i], alone.outputs[i]) << ranks << " ranks, output " << i;
  }
  // Off: every sequence on rank 0, same rows.
  const Script leader_only = on_ranks(2, false);
  EXPECT_EQ(leader_only.ranks, std::set<int>{0});
  EXPECT_EQ(leader_only.outputs, alone.outputs);
}

// Batches of more positions than the engine's step budget run as consecutive steps (runtime/forward_chunks.h):
// budgets of 7 and 1 cut through prompts, MTP inputs and decode batches, on one and two ranks, and every row is
// the one-step row.
TEST(EngineDataParallel, ChunkedStepsGiveTheRowsOfOneStepBitwise) {
  ExecutorOptions whole = options();
  whole.forward_chunk_tokens = 0;
  const Script one_step = run_script(*Engine::open(model_dir(), whole));
  for (int64_t budget : {7, 1}) {
    ExecutorOptions o = options();
    o.forward_chunk_tokens = budget;
    const Script chunked = run_script(*Engine::open(model_dir(), o));
    EXPECT_EQ(chunked.outputs, one_step.outputs) << "steps of " << budget;
  }
  EXPECT_EQ(on_ranks(2, true, 7).outputs, one_step.outputs) << "steps of 7 on 2 ranks";
}

// A chunked batch that cannot run leaves every cache as it was: a bad token in its last entry is an error before
// the first step, and a KV pool that runs out in a later step takes the earlier steps' positions back.
TEST(EngineDataParallel, AChunkedBatchThatFailsLeavesTheCachesAsTheyWere) {
  ExecutorOptions o = options();
  o.forward_chunk_tokens = 8;
  auto engine = Engine::open(model_dir(), o);
  const ModelConfig& c = engine->config();
  const int64_t V = c.vocab_size;
  auto a = engine->create_sequence(), b = engine->create_sequence();
  std::vector<int32_t> bad = prompt(12, 2, V);
  bad.back() = int32_t(V);
  EXPECT_THROW(engine->forward({EngineInput::last(a.get(), prompt(12, 1, V)), EngineInput::last(b.get(), bad)}),
               Error);
  EXPECT_EQ(a->length(), 0);
  EXPECT_EQ(b->length(), 0);

  // Room for 32 tokens in blocks of 16: the first step (8 tokens) fits, the fifth does not.
  const uint64_t row = uint64_t(c.kv_lora_rank + c.qk_rope_head_dim) * 4;
  KvPools pools = engine->create_kv_pools(32 * row * uint64_t(c.num_hidden_layers + 1), 16);
  auto p = engine->create_sequence(pools);
  EXPECT_THROW(engine->forward({EngineInput::last(p.get(), prompt(40, 3, V))}), Error);
  EXPECT_EQ(p->length(), 0);
  // And the sequence goes on: the same 20 tokens give what a fresh sequence gives.
  const Tensor after = engine->forward({EngineInput::last(p.get(), prompt(20, 3, V))});
  auto fresh = engine->create_sequence();
  const Tensor expected = engine->forward({EngineInput::last(fresh.get(), prompt(20, 3, V))});
  EXPECT_EQ(rows(after), rows(expected));
}

TEST(EngineDataParallel, SharedPrefixesMeetTheirCacheAndEveryBlockComesBack) {
  run_thread_ranks(2, [&](Communicator& comm) {
    auto engine = Engine::open(model_dir(), options(), comm);
    if (!engine->is_leader()) {
      engine->follow();
      return;
    }
    const ModelConfig& c = engine->config();
    const uint64_t row = uint64_t(c.kv_lora_rank + c.qk_rope_head_dim) * 4;
    const int64_t block = 16;
    // 400 tokens on each of the two ranks.
    KvPools pools = engine->create_kv_pools(800 * row * uint64_t(c.num_hidden_layers + 1), block);
    const std::vector<int32_t> shared = prompt(3 * block, 5, c.vocab_size);
    {
      auto first = engine->create_sequence(pools, {}, 100);  // takes rank 0
      auto a = engine->create_sequence(pools, shared, 100);  // the least loaded: rank 1
      ASSERT_TRUE(first && a);
      EXPECT_EQ(first->rank(), 0);
      EXPECT_EQ(a->rank(), 1);
      EXPECT_EQ(a->cached_tokens(), 0);
      engine->forward({EngineInput::last(a.get(), shared)});
      // Same first blocks: rank 1 again, although rank 0 is as loaded, and its cache has them.
      std::vector<int32_t> longer = shared;
      longer.push_back(7);
      auto b = engine->create_sequence(pools, longer, 100);
      ASSERT_TRUE(b);
      EXPECT_EQ(b->rank(), 1);
      EXPECT_EQ(b->cached_tokens(), 3 * block);
      EXPECT_EQ(b->length(), 3 * block);
      // The MTP module's cache of `a` lives on rank 1 too, and is counted there.
      ASSERT_TRUE(engine->has_mtp());
      EngineMtpInput m;
      m.sequence = a.get();
      m.hidden = Tensor::zeros(DType::F32, {int64_t(shared.size()) - 1, c.hidden_size});
      m.next_tokens.assign(shared.begin() + 1, shared.end());
      m.logit_indices = {int64_t(shared.size()) - 2};
      engine->forward_mtp({m});
      const std::vector<KvUsage> usage = engine->kv_usage();
      ASSERT_EQ(usage.size(), 2u);
      EXPECT_GT(usage[1].used_blocks, 0);
      EXPECT_GT(usage[1].mtp_used_blocks, 0);
      EXPECT_EQ(usage[0].mtp_used_blocks, 0);
      EXPECT_GT(usage[0].mtp_max_blocks, 0);

      // Room is kept per rank (400 tokens each): 100 reserved on rank 0 and 200 on rank 1, then 300 more fit
      // only on rank 0, and after that at most 200 fit anywhere.
      EXPECT_TRUE(engine->has_room(pools, 300));
      auto c1 = engine->create_sequence(pools, {}, 300);
      ASSERT_TRUE(c1);
      EXPECT_EQ(c1->rank(), 0);
      EXPECT_FALSE(engine->has_room(pools, 201));
      EXPECT_EQ(engine->create_sequence(pools, {}, 201), nullptr);
      auto c2 = engine->create_sequence(pools, {}, 200);
      ASSERT_TRUE(c2);
      EXPECT_EQ(c2->rank(), 1);
    }
    for (const KvUsage& u : engine->kv_usage()) {
      EXPECT_EQ(u.used_blocks, 0) << "blocks still held";
      EXPECT_EQ(u.mtp_used_blocks, 0) << "MTP blocks still held";
    }
    engine->finish();
  });
}

TEST(EngineDataParallel, ABadBatchIsAnErrorBeforeTheStepAndTheJobGoesOn) {
  run_thread_ranks(2, [&](Communicator& comm) {
    auto engine = Engine::open(model_dir(), options(), comm);
    if (!engine->is_leader()) {
      engine->follow();
      return;
    }
    const int64_t V = engine->config().vocab_size;
    auto s0 = engine->create_sequence();
    auto s1 = engine->create_sequence();
    ASSERT_EQ(s1->rank(), 1);
    EXPECT_THROW(engine->forward({EngineInput::last(s1.get(), {1, int32_t(V)})}), Error);
    EXPECT_THROW(engine->forward({EngineInput{s1.get(), {1, 2}, {2}}}), Error);
    EXPECT_THROW(engine->forward({EngineInput::last(s1.get(), {1}), EngineInput::last(s1.get(), {2})}), Error);
    EXPECT_THROW(s1->main.truncate(1), Error);  // longer than the cache
    const Tensor l = engine->forward({EngineInput::last(s0.get(), {1, 2}), EngineInput::last(s1.get(), {3})});
    EXPECT_EQ(l.dim(0), 2);
    EXPECT_EQ(s1->length(), 1);
    engine->finish();
  });
}

}  // namespace
}  // namespace deepmoe
