#include "runtime/engine.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <unordered_map>

#include "core/error.h"
#include "model/config.h"
#include "parallel/communicator.h"
#include "parallel/leader_broadcast.h"
#include "runtime/forward_chunks.h"
#include "runtime/step_plan.h"

namespace deepmoe {
namespace {

// A follower waits for the next step as long as the leader waits for its input (a chat user, a server's next
// request); a leader that dies ends the job through the launcher.
CommClock::time_point follower_deadline() { return CommClock::now() + std::chrono::hours(24 * 365); }

// Sequence operations in a step plan, applied by the follower before the step itself.
enum class Op : int64_t { CreatePools = 1, Create = 2, Truncate = 3, Release = 4 };

// Prompts that share their first KV block go to the rank that served it before, where the prefix cache has it.
uint64_t first_block_key(std::span<const int32_t> prompt, int64_t block_tokens) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a over the token ids
  for (int64_t i = 0; i < block_tokens; ++i) {
    h ^= uint64_t(uint32_t(prompt[size_t(i)]));
    h *= 1099511628211ull;
  }
  return h;
}

constexpr size_t kAffinityEntries = 4096;

}  // namespace

// The leader's view of the sequences of every rank: the operations not yet sent to each follower, and each
// rank's load (what placement decides on).
struct EngineSequences {
  explicit EngineSequences(int ranks) : ops(size_t(ranks)), op_counts(size_t(ranks)), sequences(size_t(ranks)),
                                        reserved(size_t(ranks)) {}

  void queue(int rank, std::initializer_list<int64_t> values, std::span<const int32_t> tokens = {}) {
    for (int64_t v : values) ops[size_t(rank)].i64(v);
    ops[size_t(rank)].i32s(tokens);
    ++op_counts[size_t(rank)];
  }

  std::vector<PlanWriter> ops;
  std::vector<int64_t> op_counts;
  std::vector<int64_t> sequences, reserved;  // per rank
  uint64_t next_id = 1;
  // Pools made by create_kv_pools, by rank 0's main pool: their id in the plans, and the pools (kept for kv_usage).
  std::map<const KvBlockPool*, int64_t> pool_ids;
  std::vector<KvPools> pools;
  std::unordered_map<uint64_t, int> affinity;  // first-block key → rank
  std::deque<uint64_t> affinity_order;         // oldest first
};

// A follower's sequences (those placed on its rank) and pools, by the leader's ids.
struct Engine::Follower {
  std::unordered_map<uint64_t, std::unique_ptr<Sequence>> sequences;
  std::map<int64_t, KvPools> pools;

  Sequence& sequence(int64_t id) {
    auto it = sequences.find(uint64_t(id));
    if (it == sequences.end()) throw Error("engine: the leader names sequence " + std::to_string(id) + ", unknown here");
    return *it->second;
  }
};

// ---- EngineSequence ----

int64_t EngineSequence::Cache::length() const {
  if (owner_.local_) return mtp_ ? owner_.local_->mtp.length() : owner_.local_->main.length();
  return owner_.length_[mtp_ ? 1 : 0];
}

void EngineSequence::Cache::truncate(int64_t n) {
  if (n < 0 || n > length())
    throw Error("truncate(" + std::to_string(n) + ") of a cache of " + std::to_string(length()) + " positions");
  if (owner_.local_) {
    (mtp_ ? owner_.local_->mtp : owner_.local_->main).truncate(n);
    return;
  }
  if (n == length()) return;
  owner_.length_[mtp_ ? 1 : 0] = n;
  if (auto registry = owner_.registry_.lock())
    registry->queue(owner_.rank_, {int64_t(Op::Truncate), int64_t(owner_.id_), mtp_ ? 1 : 0, n});
}

EngineSequence::~EngineSequence() {
  auto registry = registry_.lock();
  if (!registry) return;
  --registry->sequences[size_t(rank_)];
  registry->reserved[size_t(rank_)] -= reserved_tokens_;
  if (!local_) registry->queue(rank_, {int64_t(Op::Release), int64_t(id_)});
}

// ---- Engine ----

std::unique_ptr<Engine> Engine::open(const std::string& dir, const ExecutorOptions& options, Communicator& comm) {
  return std::unique_ptr<Engine>(new Engine(Executor::load(dir, options, comm), comm));
}

std::unique_ptr<Engine> Engine::open(const std::string& dir, const ExecutorOptions& options) {
  auto comm = std::make_unique<SingleRankCommunicator>();
  auto engine = open(dir, options, *comm);
  engine->own_comm_ = std::move(comm);
  return engine;
}

Engine::Engine(std::unique_ptr<Executor> executor, Communicator& comm)
    : executor_(std::move(executor)), comm_(comm) {
  if (is_leader())
    sequences_ = std::make_shared<EngineSequences>(comm_.size());
  else
    follower_ = std::make_unique<Follower>();
}

Engine::~Engine() {
  if (!is_leader() || finished_) return;
  try {
    finish();
  } catch (const std::exception&) {
    // The followers are gone already (the job is ending); nothing more to tell them.
  }
}

bool Engine::is_leader() const { return comm_.rank() == 0; }
int Engine::ranks() const { return comm_.size(); }
int Engine::sequence_ranks() const { return executor_->options().data_parallel_attention ? comm_.size() : 1; }
const ModelConfig& Engine::config() const { return executor_->config(); }
const ExecutorOptions& Engine::options() const { return executor_->options(); }
bool Engine::has_mtp() const { return executor_->has_mtp(); }
uint64_t Engine::weight_bytes() const { return executor_->weight_bytes(); }

void Engine::require_leader(const char* what) const {
  if (!is_leader()) throw Error(std::string("engine: ") + what + " is the leader's (rank 0) call; other ranks follow()");
  if (finished_) throw Error(std::string("engine: ") + what + " after finish()");
}

template <class Body>
auto Engine::run_step(Body&& body) {
  announced_ = false;
  try {
    return body();
  } catch (const std::exception& e) {
    // The followers are inside the step's collectives: they cannot be brought back to a clean state.
    if (announced_ && comm_.size() > 1) comm_.abort(std::string("the leader failed inside a step: ") + e.what());
    throw;
  }
}

// ---- placement ----

namespace {

int64_t capacity_tokens(const KvPools* pools) {  // per rank; 0 = unbounded
  if (!pools || !pools->main) return 0;
  return pools->main->max_blocks() * pools->main->layout().block_tokens;
}

}  // namespace

bool Engine::has_room(const KvPools& pools, int64_t reserve_tokens) const {
  const int64_t capacity = capacity_tokens(&pools);
  if (capacity <= 0 || reserve_tokens <= 0) return true;
  for (int r = 0; r < sequence_ranks(); ++r)
    if (sequences_->reserved[size_t(r)] + reserve_tokens <= capacity) return true;
  return false;
}

int Engine::choose_rank(const KvPools* pools, std::span<const int32_t> prompt, int64_t reserve_tokens) {
  EngineSequences& s = *sequences_;
  const int n = sequence_ranks();
  const int64_t capacity = capacity_tokens(pools);
  auto fits = [&](int r) {
    return capacity <= 0 || reserve_tokens <= 0 || s.reserved[size_t(r)] + reserve_tokens <= capacity;
  };
  int best = -1;
  for (int r = 0; r < n; ++r) {
    if (!fits(r)) continue;
    if (best < 0 || std::pair(s.reserved[size_t(r)], s.sequences[size_t(r)]) <
                        std::pair(s.reserved[size_t(best)], s.sequences[size_t(best)]))
      best = r;
  }
  if (best < 0 || n == 1) return best;
  const int64_t block = pools && pools->main ? pools->main->layout().block_tokens : 0;
  if (block <= 0 || int64_t(prompt.size()) < block) return best;
  const uint64_t key = first_block_key(prompt, block);
  auto it = s.affinity.find(key);
  // The prefix's rank, unless it is much busier than the least loaded one.
  constexpr int64_t kAffinitySlack = 2;
  if (it != s.affinity.end() && fits(it->second) &&
      s.sequences[size_t(it->second)] <= s.sequences[size_t(best)] + kAffinitySlack)
    return it->second;
  if (it == s.affinity.end()) {
    s.affinity_order.push_back(key);
    if (s.affinity_order.size() > kAffinityEntries) {
      s.affinity.erase(s.affinity_order.front());
      s.affinity_order.pop_front();
    }
  }
  s.affinity[key] = best;
  return best;
}

std::unique_ptr<EngineSequence> Engine::place_sequence(const KvPools* pools, std::span<const int32_t> prompt,
                                                       int64_t reserve_tokens) {
  const int rank = choose_rank(pools, prompt, reserve_tokens);
  if (rank < 0) return nullptr;
  EngineSequences& s = *sequences_;
  std::unique_ptr<EngineSequence> seq(new EngineSequence());
  seq->registry_ = sequences_;
  seq->id_ = s.next_id++;
  seq->rank_ = rank;
  seq->reserved_tokens_ = std::max<int64_t>(reserve_tokens, 0);
  if (rank == 0) {
    seq->local_ = pools ? executor_->create_sequence(*pools, prompt) : executor_->create_sequence();
    seq->cached_tokens_ = seq->local_->cached_tokens();
  } else {
    const bool prefix = pools && !prompt.empty();
    const int64_t pools_id = pools ? s.pool_ids.at(pools->main.get()) : 0;
    s.queue(rank, {int64_t(Op::Create), int64_t(seq->id_), pools_id, prefix ? int64_t(prompt.size()) : 0},
            prefix ? prompt : std::span<const int32_t>{});
    if (prefix) {
      // The rank's prefix cache answers how much of the prompt it holds: one small step now.
      run_step([&] {
        announce(Step::Operations);
        std::vector<int64_t> expected(size_t(comm_.size()), 0);
        expected[size_t(rank)] = sizeof(int64_t);
        const auto replies = gather_to_leader(comm_, {}, expected, comm_.deadline_from_now());
        seq->cached_tokens_ = PlanReader(replies[size_t(rank)]).i64();
        return 0;
      });
      seq->length_[0] = seq->cached_tokens_;
    }
  }
  ++s.sequences[size_t(rank)];
  s.reserved[size_t(rank)] += seq->reserved_tokens_;
  return seq;
}

std::unique_ptr<EngineSequence> Engine::create_sequence() {
  require_leader("create_sequence");
  return place_sequence(nullptr, {}, 0);
}

std::unique_ptr<EngineSequence> Engine::create_sequence(const KvPools& pools, std::span<const int32_t> prompt,
                                                        int64_t reserve_tokens) {
  require_leader("create_sequence");
  if (!pools.main) throw Error("create_sequence: no KV pool for the main layers");
  if (sequence_ranks() > 1 && !sequences_->pool_ids.count(pools.main.get()))
    throw Error("create_sequence: the KV pools were not made by this engine's create_kv_pools");
  return place_sequence(&pools, prompt, reserve_tokens);
}

KvPools Engine::create_kv_pools(uint64_t budget_bytes, int64_t block_tokens) {
  require_leader("create_kv_pools");
  // Each rank that holds sequences gets an equal share of the budget.
  budget_bytes /= uint64_t(sequence_ranks());
  KvPools pools = executor_->create_kv_pools(budget_bytes, block_tokens);
  EngineSequences& s = *sequences_;
  const int64_t id = int64_t(s.pools.size()) + 1;
  s.pool_ids[pools.main.get()] = id;
  s.pools.push_back(pools);
  for (int r = 1; r < sequence_ranks(); ++r)
    s.queue(r, {int64_t(Op::CreatePools), id, int64_t(budget_bytes), block_tokens});
  return pools;
}

// ---- steps ----

void Engine::announce(Step step, std::vector<std::vector<std::byte>> parts) {
  announced_ = true;
  if (comm_.size() == 1) return;
  EngineSequences& s = *sequences_;
  const size_t ranks = size_t(comm_.size());
  parts.resize(ranks);
  std::vector<std::vector<std::byte>> messages(ranks);
  std::vector<int64_t> header(1 + ranks, 0);
  header[0] = int64_t(step);
  for (size_t r = 1; r < ranks; ++r) {
    PlanWriter w;
    w.i64(s.op_counts[r]);
    std::vector<std::byte>& bytes = w.bytes();
    bytes.insert(bytes.end(), s.ops[r].bytes().begin(), s.ops[r].bytes().end());
    bytes.insert(bytes.end(), parts[r].begin(), parts[r].end());
    s.ops[r] = PlanWriter();
    s.op_counts[r] = 0;
    header[1 + r] = int64_t(bytes.size());
    messages[r] = std::move(bytes);
  }
  const auto deadline = comm_.deadline_from_now();
  broadcast_from_leader(comm_, header, header.size(), deadline);
  scatter_from_leader(comm_, std::move(messages), 0, deadline);
}

namespace {

// Checks what a follower's executor would refuse, so that a bad batch is an error before the step is announced.
void check_remote_entry(const ModelConfig& c, std::span<const int32_t> tokens, std::span<const int64_t> indices) {
  for (int32_t t : tokens)
    if (t < 0 || t >= c.vocab_size)
      throw Error("token id " + std::to_string(t) + " is outside the vocabulary [0, " + std::to_string(c.vocab_size) +
                  ")");
  for (int64_t i : indices)
    if (i < 0 || i >= int64_t(tokens.size()))
      throw Error("logit index " + std::to_string(i) + " outside the " + std::to_string(tokens.size()) +
                  " tokens of its sequence");
}

template <class Input>
void check_distinct_sequences(const std::vector<Input>& batch) {
  std::vector<const EngineSequence*> seen;
  for (const auto& in : batch) {
    if (!in.sequence) throw Error("a batch entry has no sequence");
    seen.push_back(in.sequence);
  }
  std::sort(seen.begin(), seen.end());
  if (std::adjacent_find(seen.begin(), seen.end()) != seen.end())
    throw Error("a sequence appears twice in one batch");
}

// A forward run in steps that fails part-way takes the earlier steps' positions back out of one cache (main or MTP)
// of each sequence, to the lengths it had before the first step.
using SequenceCache = EngineSequence::Cache EngineSequence::*;
template <class Input>
std::vector<int64_t> cache_lengths(const std::vector<Input>& batch, SequenceCache cache) {
  std::vector<int64_t> lengths;
  for (const Input& e : batch) lengths.push_back((e.sequence->*cache).length());
  return lengths;
}
template <class Input>
void truncate_caches_to(const std::vector<Input>& batch, SequenceCache cache, const std::vector<int64_t>& lengths) {
  for (size_t i = 0; i < batch.size(); ++i) try {
      EngineSequence::Cache& c = batch[i].sequence->*cache;
      if (c.length() > lengths[i]) c.truncate(lengths[i]);
    } catch (const std::exception&) {
      // The job is ending (a step failed on another rank): nothing left to restore.
    }
}

}  // namespace

namespace {

// The batch as plan_forward_pieces sees it: positions, logit indices and whether every position's hidden row is
// returned, per entry.
struct PieceInputs {
  std::vector<int64_t> lengths;
  std::vector<std::vector<int64_t>> logit_indices;
  std::vector<bool> every_hidden_row;
};

// Runs the steps of `steps` through `step` (a vector of sliced inputs → logits, hidden rows when asked); when one
// throws, `take_back` restores the caches before the error goes on.
template <class Input, class Slice, class Step, class TakeBack>
Tensor forward_in_steps(const std::vector<Input>& batch, const PieceInputs& in, int64_t budget, Tensor* hidden,
                        int64_t vocab, int64_t hidden_size, Slice&& slice, Step&& step, TakeBack&& take_back) {
  const auto steps = plan_forward_pieces(in.lengths, in.logit_indices, budget);
  std::vector<Tensor> logits(steps.size()), hiddens(steps.size());
  try {
    for (size_t s = 0; s < steps.size(); ++s) {
      std::vector<Input> part;
      for (const ForwardPiece& p : steps[s]) part.push_back(slice(batch[p.entry], p));
      logits[s] = step(part, hidden ? &hiddens[s] : nullptr);
    }
  } catch (...) {
    take_back();
    throw;
  }
  if (hidden) *hidden = gather_piece_rows(steps, hiddens, in.logit_indices, in.lengths, in.every_hidden_row, hidden_size);
  return gather_piece_rows(steps, logits, in.logit_indices, in.lengths, std::vector<bool>(batch.size(), false), vocab);
}

}  // namespace

Tensor Engine::forward(const std::vector<EngineInput>& batch, Tensor* hidden) {
  require_leader("forward");
  check_distinct_sequences(batch);
  const int64_t budget = options().forward_chunk_tokens;
  PieceInputs in;
  int64_t total = 0;
  for (const EngineInput& e : batch) {
    in.lengths.push_back(int64_t(e.tokens.size()));
    in.logit_indices.push_back(e.logit_indices);
    in.every_hidden_row.push_back(e.hidden_of_all_tokens);
    total += int64_t(e.tokens.size());
  }
  if (budget <= 0 || total <= budget) return forward_step(batch, hidden);
  // Every entry is checked before the first step, so a bad batch leaves the caches as they were.
  for (const EngineInput& e : batch) check_remote_entry(config(), e.tokens, e.logit_indices);
  const std::vector<int64_t> before = cache_lengths(batch, &EngineSequence::main);
  return forward_in_steps(
      batch, in, budget, hidden, config().vocab_size, config().hidden_size,
      [](const EngineInput& e, const ForwardPiece& p) {
        return EngineInput{e.sequence, std::vector<int32_t>(e.tokens.begin() + p.begin, e.tokens.begin() + p.end),
                           p.logit_indices, e.hidden_of_all_tokens};
      },
      [&](const std::vector<EngineInput>& part, Tensor* h) { return forward_step(part, h); },
      [&] { truncate_caches_to(batch, &EngineSequence::main, before); });
}

Tensor Engine::forward_step(const std::vector<EngineInput>& batch, Tensor* hidden) {
  const ModelConfig& c = config();
  const int64_t V = c.vocab_size, H = c.hidden_size;
  const size_t ranks = size_t(comm_.size());
  std::vector<SequenceInput> local;
  std::vector<PlanWriter> parts(ranks);
  std::vector<int64_t> entries(ranks, 0), logit_rows(ranks, 0), hidden_rows(ranks, 0);
  for (const EngineInput& in : batch) {
    const size_t r = size_t(in.sequence->rank());
    if (r == 0) {
      local.push_back({in.sequence->local(), in.tokens, in.logit_indices, in.hidden_of_all_tokens});
      continue;
    }
    check_remote_entry(c, in.tokens, in.logit_indices);
    PlanWriter& w = parts[r];
    w.i64(int64_t(in.sequence->id_));
    w.i64(int64_t(in.tokens.size()));
    w.i32s(in.tokens);
    w.i64(int64_t(in.logit_indices.size()));
    w.i64s(in.logit_indices);
    w.i64(in.hidden_of_all_tokens ? 1 : 0);
    ++entries[r];
    logit_rows[r] += int64_t(in.logit_indices.size());
    hidden_rows[r] += in.hidden_of_all_tokens ? int64_t(in.tokens.size()) : int64_t(in.logit_indices.size());
  }
  std::vector<std::vector<std::byte>> messages(ranks);
  std::vector<int64_t> expected(ranks, 0);
  for (size_t r = 1; r < ranks; ++r) {
    PlanWriter w;
    w.i64(hidden ? 1 : 0);
    w.i64(entries[r]);
    messages[r] = std::move(w.bytes());
    messages[r].insert(messages[r].end(), parts[r].bytes().begin(), parts[r].bytes().end());
    expected[r] = (logit_rows[r] * V + (hidden ? hidden_rows[r] * H : 0)) * int64_t(sizeof(float));
  }

  Tensor local_hidden;
  std::vector<std::span<const std::byte>> replies;
  const Tensor local_logits = run_step([&] {
    Tensor l = executor_->forward(local, hidden ? &local_hidden : nullptr,
                                  [&] { announce(Step::Forward, std::move(messages)); });
    replies = gather_to_leader(comm_, {}, expected, reply_storage_, comm_.deadline_from_now());
    return l;
  });
  // Every entry on this rank: its rows are already in batch order.
  if (local.size() == batch.size()) {
    if (hidden) *hidden = local_hidden;
    return local_logits;
  }

  // Rows in batch order: rank 0's from its own forward, another rank's from its reply (logits, then hidden).
  int64_t n_logits = 0, n_hidden = 0;
  for (const EngineInput& in : batch) {
    n_logits += int64_t(in.logit_indices.size());
    n_hidden += in.hidden_of_all_tokens ? int64_t(in.tokens.size()) : int64_t(in.logit_indices.size());
  }
  Tensor logits = Tensor::uninitialized(DType::F32, {n_logits, V});  // every row is written below
  if (hidden) *hidden = Tensor::uninitialized(DType::F32, {n_hidden, H});
  std::vector<int64_t> logit_at(ranks, 0), hidden_at(ranks, 0);  // rows consumed per rank
  float* out_l = logits.data<float>();
  float* out_h = hidden ? hidden->data<float>() : nullptr;
  for (const EngineInput& in : batch) {
    const size_t r = size_t(in.sequence->rank());
    const int64_t nl = int64_t(in.logit_indices.size());
    const int64_t nh = in.hidden_of_all_tokens ? int64_t(in.tokens.size()) : nl;
    const float* src_l = nullptr;
    const float* src_h = nullptr;
    if (r == 0) {
      src_l = local_logits.data<float>() + logit_at[0] * V;
      if (hidden) src_h = local_hidden.data<float>() + hidden_at[0] * H;
    } else {
      const float* reply = reinterpret_cast<const float*>(replies[r].data());
      src_l = reply + logit_at[r] * V;
      if (hidden) src_h = reply + logit_rows[r] * V + hidden_at[r] * H;
      in.sequence->length_[0] += int64_t(in.tokens.size());
    }
    out_l = std::copy_n(src_l, nl * V, out_l);
    if (hidden) out_h = std::copy_n(src_h, nh * H, out_h);
    logit_at[r] += nl;
    hidden_at[r] += nh;
  }
  return logits;
}

Tensor Engine::forward_mtp(const std::vector<EngineMtpInput>& batch, Tensor* hidden) {
  require_leader("forward_mtp");
  if (!has_mtp()) throw Error("this model has no MTP layer loaded (num_nextn_predict_layers = 0 or load_mtp off)");
  check_distinct_sequences(batch);
  const int64_t budget = options().forward_chunk_tokens, H = config().hidden_size;
  PieceInputs in;
  int64_t total = 0;
  for (const EngineMtpInput& e : batch) {
    in.lengths.push_back(int64_t(e.next_tokens.size()));
    in.logit_indices.push_back(e.logit_indices);
    in.every_hidden_row.push_back(false);
    total += int64_t(e.next_tokens.size());
  }
  if (budget <= 0 || total <= budget) return forward_mtp_step(batch, hidden);
  for (const EngineMtpInput& e : batch) {
    const int64_t n = int64_t(e.next_tokens.size());
    if (e.hidden.rank() != 2 || e.hidden.dim(0) != n || e.hidden.dim(1) != H || e.hidden.dtype() != DType::F32)
      throw Error("MTP input hidden must be F32 [" + std::to_string(n) + ", " + std::to_string(H) + "], got " +
                  e.hidden.shape_string());
    check_remote_entry(config(), e.next_tokens, e.logit_indices);
  }
  const std::vector<int64_t> before = cache_lengths(batch, &EngineSequence::mtp);
  return forward_in_steps(
      batch, in, budget, hidden, config().vocab_size, H,
      [H](const EngineMtpInput& e, const ForwardPiece& p) {
        EngineMtpInput piece;
        piece.sequence = e.sequence;
        piece.hidden = Tensor::uninitialized(DType::F32, {p.end - p.begin, H});
        std::copy_n(e.hidden.data<const float>() + p.begin * H, (p.end - p.begin) * H, piece.hidden.data<float>());
        piece.next_tokens.assign(e.next_tokens.begin() + p.begin, e.next_tokens.begin() + p.end);
        piece.logit_indices = p.logit_indices;
        return piece;
      },
      [&](const std::vector<EngineMtpInput>& part, Tensor* h) { return forward_mtp_step(part, h); },
      [&] { truncate_caches_to(batch, &EngineSequence::mtp, before); });
}

Tensor Engine::forward_mtp_step(const std::vector<EngineMtpInput>& batch, Tensor* hidden) {
  const ModelConfig& c = config();
  const int64_t V = c.vocab_size, H = c.hidden_size;
  const size_t ranks = size_t(comm_.size());
  std::vector<MtpInput> local;
  std::vector<PlanWriter> parts(ranks);
  std::vector<int64_t> entries(ranks, 0), rows(ranks, 0);
  for (const EngineMtpInput& in : batch) {
    const size_t r = size_t(in.sequence->rank());
    if (r == 0) {
      local.push_back({in.sequence->local(), in.hidden, in.next_tokens, in.logit_indices});
      continue;
    }
    const int64_t n = int64_t(in.next_tokens.size());
    if (in.hidden.rank() != 2 || in.hidden.dim(0) != n || in.hidden.dim(1) != H || in.hidden.dtype() != DType::F32)
      throw Error("MTP input hidden must be F32 [" + std::to_string(n) + ", " + std::to_string(H) + "], got " +
                  in.hidden.shape_string());
    check_remote_entry(c, in.next_tokens, in.logit_indices);
    PlanWriter& w = parts[r];
    w.i64(int64_t(in.sequence->id_));
    w.i64(n);
    w.i32s(in.next_tokens);
    w.f32s(std::span<const float>(in.hidden.data<float>(), size_t(n * H)));
    w.i64(int64_t(in.logit_indices.size()));
    w.i64s(in.logit_indices);
    ++entries[r];
    rows[r] += int64_t(in.logit_indices.size());
  }
  std::vector<std::vector<std::byte>> messages(ranks);
  std::vector<int64_t> expected(ranks, 0);
  for (size_t r = 1; r < ranks; ++r) {
    PlanWriter w;
    w.i64(hidden ? 1 : 0);
    w.i64(entries[r]);
    messages[r] = std::move(w.bytes());
    messages[r].insert(messages[r].end(), parts[r].bytes().begin(), parts[r].bytes().end());
    expected[r] = rows[r] * (V + (hidden ? H : 0)) * int64_t(sizeof(float));
  }

  Tensor local_hidden;
  std::vector<std::span<const std::byte>> replies;
  const Tensor local_logits = run_step([&] {
    Tensor l = executor_->forward_mtp(local, hidden ? &local_hidden : nullptr,
                                      [&] { announce(Step::ForwardMtp, std::move(messages)); });
    replies = gather_to_leader(comm_, {}, expected, reply_storage_, comm_.deadline_from_now());
    return l;
  });
  if (local.size() == batch.size()) {
    if (hidden) *hidden = local_hidden;
    return local_logits;
  }

  int64_t n_rows = 0;
  for (const EngineMtpInput& in : batch) n_rows += int64_t(in.logit_indices.size());
  Tensor logits = Tensor::uninitialized(DType::F32, {n_rows, V});  // every row is written below
  if (hidden) *hidden = Tensor::uninitialized(DType::F32, {n_rows, H});
  std::vector<int64_t> at(ranks, 0);
  float* out_l = logits.data<float>();
  float* out_h = hidden ? hidden->data<float>() : nullptr;
  for (const EngineMtpInput& in : batch) {
    const size_t r = size_t(in.sequence->rank());
    const int64_t n = int64_t(in.logit_indices.size());
    const float* src_l = nullptr;
    const float* src_h = nullptr;
    if (r == 0) {
      src_l = local_logits.data<float>() + at[0] * V;
      if (hidden) src_h = local_hidden.data<float>() + at[0] * H;
    } else {
      const float* reply = reinterpret_cast<const float*>(replies[r].data());
      src_l = reply + at[r] * V;
      if (hidden) src_h = reply + rows[r] * V + at[r] * H;
      in.sequence->length_[1] += int64_t(in.next_tokens.size());
    }
    out_l = std::copy_n(src_l, n * V, out_l);
    if (hidden) out_h = std::copy_n(src_h, n * H, out_h);
    at[r] += n;
  }
  return logits;
}

void Engine::rebalance() {
  require_leader("rebalance");
  run_step([&] {
    announce(Step::Rebalance);
    executor_->rebalance();
    return 0;
  });
}

namespace {

KvUsage usage_of(const std::vector<KvPools>& pools) {
  KvUsage u;
  for (const KvPools& p : pools) {
    if (p.main) {
      u.used_blocks += p.main->used_blocks();
      u.cached_blocks += p.main->cached_blocks();
      u.max_blocks += p.main->max_blocks();
    }
    if (p.mtp) {
      u.mtp_used_blocks += p.mtp->used_blocks();
      u.mtp_cached_blocks += p.mtp->cached_blocks();
      u.mtp_max_blocks += p.mtp->max_blocks();
    }
  }
  return u;
}

constexpr int kKvUsageFields = 6;

}  // namespace

std::vector<KvUsage> Engine::kv_usage() {
  require_leader("kv_usage");
  std::vector<KvUsage> out{usage_of(sequences_->pools)};
  if (comm_.size() == 1) return out;
  std::vector<int64_t> expected(size_t(comm_.size()), kKvUsageFields * int64_t(sizeof(int64_t)));
  expected[0] = 0;
  const auto replies = run_step([&] {
    announce(Step::KvUsage);
    return gather_to_leader(comm_, {}, expected, comm_.deadline_from_now());
  });
  for (size_t r = 1; r < replies.size(); ++r) {
    PlanReader rd(replies[r]);
    KvUsage u;
    u.used_blocks = rd.i64();
    u.cached_blocks = rd.i64();
    u.max_blocks = rd.i64();
    u.mtp_used_blocks = rd.i64();
    u.mtp_cached_blocks = rd.i64();
    u.mtp_max_blocks = rd.i64();
    out.push_back(u);
  }
  return out;
}

std::span<const std::byte> Engine::reply_bytes(const Tensor& logits, const Tensor* hidden) {
  const size_t nl = size_t(logits.numel()) * sizeof(float);
  if (!hidden) return {reinterpret_cast<const std::byte*>(logits.numel() > 0 ? logits.data<float>() : nullptr), nl};
  const size_t nh = size_t(hidden->numel()) * sizeof(float);
  if (reply_storage_.size() < nl + nh) reply_storage_.resize(nl + nh);
  if (nl > 0) std::memcpy(reply_storage_.data(), logits.data<float>(), nl);
  if (nh > 0) std::memcpy(reply_storage_.data() + nl, hidden->data<float>(), nh);
  return {reply_storage_.data(), nl + nh};
}

void Engine::finish() {
  if (!is_leader() || finished_) return;
  finished_ = true;
  announce(Step::Finish);
}

// ---- the follower ----

void Engine::follow() {
  if (is_leader()) throw Error("engine: follow() is for the ranks other than 0");
  Follower& f = *follower_;
  const size_t ranks = size_t(comm_.size());
  const int64_t H = config().hidden_size;
  for (;;) {
    const std::vector<int64_t> header =
        broadcast_from_leader(comm_, {}, 1 + ranks, follower_deadline(), BroadcastWait::Patient);
    const std::vector<std::byte> message =
        scatter_from_leader(comm_, {}, header[1 + size_t(comm_.rank())], comm_.deadline_from_now());
    PlanReader rd(message);

    PlanWriter reply;  // the cached-prefix length of each sequence created with a prompt
    for (int64_t n_ops = rd.i64(), i = 0; i < n_ops; ++i) {
      switch (Op(rd.i64())) {
        case Op::CreatePools: {
          const int64_t id = rd.i64(), budget = rd.i64(), block_tokens = rd.i64();
          f.pools[id] = executor_->create_kv_pools(uint64_t(budget), block_tokens);
          break;
        }
        case Op::Create: {
          const int64_t id = rd.i64(), pools_id = rd.i64(), prompt_len = rd.i64();
          const std::vector<int32_t> prompt = rd.i32s(prompt_len);
          std::unique_ptr<Sequence> s;
          if (pools_id == 0) {
            s = executor_->create_sequence();
          } else {
            auto it = f.pools.find(pools_id);
            if (it == f.pools.end()) throw Error("engine: the leader names KV pools " + std::to_string(pools_id) + ", unknown here");
            s = executor_->create_sequence(it->second, prompt);
          }
          if (prompt_len > 0) reply.i64(s->cached_tokens());
          f.sequences[uint64_t(id)] = std::move(s);
          break;
        }
        case Op::Truncate: {
          Sequence& s = f.sequence(rd.i64());
          const int64_t which = rd.i64(), n = rd.i64();
          (which ? s.mtp : s.main).truncate(n);
          break;
        }
        case Op::Release:
          f.sequences.erase(uint64_t(rd.i64()));
          break;
        default:
          throw Error("engine: unknown sequence operation from the leader");
      }
    }

    switch (Step(header[0])) {
      case Step::Forward: {
        const bool want_hidden = rd.i64() != 0;
        std::vector<SequenceInput> batch(size_t(rd.i64()));
        for (SequenceInput& in : batch) {
          in.sequence = &f.sequence(rd.i64());
          in.tokens = rd.i32s(rd.i64());
          in.logit_indices = rd.i64s(rd.i64());
          in.hidden_of_all_tokens = rd.i64() != 0;
        }
        Tensor h;
        const Tensor logits = executor_->forward(batch, want_hidden ? &h : nullptr);
        gather_to_leader(comm_, reply_bytes(logits, want_hidden ? &h : nullptr), {}, comm_.deadline_from_now());
        break;
      }
      case Step::ForwardMtp: {
        const bool want_hidden = rd.i64() != 0;
        std::vector<MtpInput> batch(size_t(rd.i64()));
        for (MtpInput& in : batch) {
          in.sequence = &f.sequence(rd.i64());
          const int64_t n = rd.i64();
          in.next_tokens = rd.i32s(n);
          in.hidden = Tensor::zeros(DType::F32, {n, H});
          rd.f32s(in.hidden.data<float>(), n * H);
          in.logit_indices = rd.i64s(rd.i64());
        }
        Tensor h;
        const Tensor logits = executor_->forward_mtp(batch, want_hidden ? &h : nullptr);
        gather_to_leader(comm_, reply_bytes(logits, want_hidden ? &h : nullptr), {}, comm_.deadline_from_now());
        break;
      }
      case Step::Operations:
        gather_to_leader(comm_, reply.bytes(), {}, comm_.deadline_from_now());
        break;
      case Step::KvUsage: {
        std::vector<KvPools> pools;
        for (const auto& [id, p] : f.pools) pools.push_back(p);
        const KvUsage u = usage_of(pools);
        PlanWriter w;
        w.i64(u.used_blocks);
        w.i64(u.cached_blocks);
        w.i64(u.max_blocks);
        w.i64(u.mtp_used_blocks);
        w.i64(u.mtp_cached_blocks);
        w.i64(u.mtp_max_blocks);
        gather_to_leader(comm_, w.bytes(), {}, comm_.deadline_from_now());
        break;
      }
      case Step::Rebalance:
        executor_->rebalance();
        break;
      case Step::Finish:
        return;
      default:
        throw Error("engine: unknown step " + std::to_string(header[0]) + " from the leader");
    }
  }
}

}  // namespace deepmoe
