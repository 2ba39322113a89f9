// The engine every model-running command drives (DESIGN.md §1): one job over the ranks of a communicator (one
// process, threads, or an MPI launch). Rank 0 — the leader — holds the requests, reads the input and writes the
// output; it calls forward() and forward_mtp() as a single process would. Every other rank — a follower — calls
// follow(), which runs each of the leader's steps.
//
// Attention is data-parallel and the experts expert-parallel, as in DeepSeek-V3's deployment: each sequence's KV
// cache lives on one rank, chosen when the sequence is created (the rank with the least KV reserved, or the one
// that served the same prompt prefix, so the prefix cache hits), and that rank runs the sequence's attention,
// norms and head; the MoE layers send every token to the ranks that hold its experts (with the redundant experts
// and live rebalance of the executor). The logits and hidden rows come back to the leader in batch order, bit for
// bit what one process computes (the forward is batch-invariant and rank-invariant).
//
// Before each step the leader announces it with a step plan (parallel/leader_broadcast.h): the sequence
// operations since the last step (creations, truncations, releases) and each rank's share of the batch, sent
// after the step's input passed its checks. An error inside a step, once other ranks take part, cannot be undone:
// the leader ends the job (Communicator::abort — every rank exits non-zero) instead of leaving the followers
// waiting.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "runtime/executor.h"

namespace deepmoe {

class Communicator;
class Engine;
struct EngineSequences;

// The leader's handle of one sequence, wherever its caches live. Destroying it frees them (on another rank, with
// the next step).
class EngineSequence {
 public:
  // The length of one of the sequence's caches (the main layers', or the MTP layer's that runs one position
  // behind), and its truncation: truncate(n) forgets positions >= n (speculative decoding's rollback).
  class Cache {
   public:
    int64_t length() const;
    void truncate(int64_t n);

   private:
    friend class EngineSequence;
    Cache(EngineSequence& owner, bool mtp) : owner_(owner), mtp_(mtp) {}
    EngineSequence& owner_;
    bool mtp_;
  };

  ~EngineSequence();
  EngineSequence(const EngineSequence&) = delete;
  EngineSequence& operator=(const EngineSequence&) = delete;

  int64_t length() const { return main.length(); }
  // Prompt tokens taken from the prefix cache instead of computed.
  int64_t cached_tokens() const { return cached_tokens_; }
  // The rank whose memory holds the caches.
  int rank() const { return rank_; }
  // The caches themselves when they live on this process (rank 0), else null.
  Sequence* local() { return local_.get(); }
  const Sequence* local() const { return local_.get(); }

  Cache main{*this, false};
  Cache mtp{*this, true};

 private:
  friend class Engine;
  EngineSequence() = default;

  std::weak_ptr<EngineSequences> registry_;  // the engine's leader state; gone once the engine is
  uint64_t id_ = 0;
  int rank_ = 0;
  std::unique_ptr<Sequence> local_;
  int64_t length_[2] = {0, 0};  // main, MTP (another rank's caches)
  int64_t cached_tokens_ = 0;
  int64_t reserved_tokens_ = 0;
};

using EngineInput = BasicSequenceInput<EngineSequence>;
using EngineMtpInput = BasicMtpInput<EngineSequence>;

// KV memory of every rank's pools (Engine::kv_usage).
struct KvUsage {
  int64_t used_blocks = 0;    // held by live sequences
  int64_t cached_blocks = 0;  // unreferenced, kept for prefix reuse (evictable)
  int64_t max_blocks = 0;
  // The same for the MTP module's pools (zero where the pools have none).
  int64_t mtp_used_blocks = 0, mtp_cached_blocks = 0, mtp_max_blocks = 0;
};

class Engine {
 public:
  // Loads the model on every rank of `comm` (each rank binds the experts of its slots). The communicator must
  // outlive the engine.
  static std::unique_ptr<Engine> open(const std::string& dir, const ExecutorOptions& options, Communicator& comm);
  // A single process: the engine owns a one-rank communicator.
  static std::unique_ptr<Engine> open(const std::string& dir, const ExecutorOptions& options = {});
  // The leader's destructor calls finish().
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  bool is_leader() const;
  int ranks() const;

  // Follower: runs the leader's steps (and keeps the caches of the sequences placed here) until the leader calls
  // finish(). Errors (a step that failed on this rank) propagate; the communicator has then ended the job.
  void follow();
  // Leader: releases the followers from follow(). Later steps are an error. Called again, it does nothing.
  void finish();

  const ModelConfig& config() const;
  const ExecutorOptions& options() const;
  bool has_mtp() const;
  uint64_t weight_bytes() const;

  // Leader: a sequence with caches that grow as needed, on the rank with the fewest sequences (rank 0 first).
  std::unique_ptr<EngineSequence> create_sequence();
  // Leader: block pools on each rank that holds sequences, each with an equal share of `budget_bytes`
  // (Executor::create_kv_pools). Returns rank 0's; it names the pools of every rank in create_sequence().
  KvPools create_kv_pools(uint64_t budget_bytes, int64_t block_tokens = 64);
  // Leader: a sequence whose caches draw from `pools`, on a rank with room to reserve `reserve_tokens` more
  // tokens (the caller's bound on what it will feed; 0 = no bound is kept), or null when no rank has. A rank that
  // already served a prompt with the same first block is preferred (its prefix cache); when a prompt is given,
  // its longest cached prefix is taken (EngineSequence::cached_tokens()).
  std::unique_ptr<EngineSequence> create_sequence(const KvPools& pools, std::span<const int32_t> prompt = {},
                                                  int64_t reserve_tokens = 0);
  // Whether create_sequence(pools, prompt, reserve_tokens) would find a rank with room now.
  bool has_room(const KvPools& pools, int64_t reserve_tokens) const;
  // Ranks that hold sequences, each with its share of the budget given to create_kv_pools.
  int sequence_ranks() const;
  // Leader, collective: the blocks of each rank's pools made by create_kv_pools (rank-major).
  std::vector<KvUsage> kv_usage();

  // Leader: one step on every rank (Executor::forward / forward_mtp). Rows come back in batch order, as from one
  // process. A batch of more positions than options().forward_chunk_tokens runs as consecutive steps of at most
  // that many (runtime/forward_chunks.h), which gives the same rows bit for bit; its input is checked before the
  // first step, and a step that fails before it runs (no room in a KV pool) takes the earlier steps' positions
  // back out of the caches.
  Tensor forward(const std::vector<EngineInput>& batch, Tensor* hidden = nullptr);
  Tensor forward_mtp(const std::vector<EngineMtpInput>& batch, Tensor* hidden = nullptr);
  // Leader: re-places the experts from the load statistics on every rank (Executor::rebalance).
  void rebalance();

  // This rank's executor: placement, load statistics, trace (identical statistics on every rank).
  Executor& executor() { return *executor_; }
  const Executor& executor() const { return *executor_; }

 private:
  enum class Step : int64_t { Forward = 1, ForwardMtp = 2, Rebalance = 3, Finish = 4, Operations = 5, KvUsage = 6 };
  struct Follower;
  friend class EngineSequence;

  Engine(std::unique_ptr<Executor> executor, Communicator& comm);
  void require_leader(const char* what) const;
  // One step of forward() / forward_mtp() over the whole batch.
  Tensor forward_step(const std::vector<EngineInput>& batch, Tensor* hidden);
  Tensor forward_mtp_step(const std::vector<EngineMtpInput>& batch, Tensor* hidden);
  // Sends the step plan: the step, the pending sequence operations and `parts[r]`, rank r's share of the step.
  void announce(Step step, std::vector<std::vector<std::byte>> parts = {});
  // Runs `body` (a step on the leader, which calls announce() once its input passed the checks); an error after
  // the step was announced ends the job.
  template <class Body>
  auto run_step(Body&& body);
  int choose_rank(const KvPools* pools, std::span<const int32_t> prompt, int64_t reserve_tokens);
  std::unique_ptr<EngineSequence> place_sequence(const KvPools* pools, std::span<const int32_t> prompt,
                                                 int64_t reserve_tokens);

  std::unique_ptr<Communicator> own_comm_;  // declared first: destroyed after the executor that uses it
  std::unique_ptr<Executor> executor_;
  Communicator& comm_;
  std::shared_ptr<EngineSequences> sequences_;  // the leader's view of every rank's sequences
  std::unique_ptr<Follower> follower_;          // a follower's sequences and pools
  // The leader's receive buffer for the other ranks' logits and hidden rows, and a follower's send buffer when
  // it returns both: kept across steps (see gather_to_leader).
  std::vector<std::byte> reply_storage_;
  // A follower's reply to a forward: the logits rows as they are, or logits then hidden rows in reply_storage_.
  std::span<const std::byte> reply_bytes(const Tensor& logits, const Tensor* hidden);
  bool finished_ = false;
  bool announced_ = false;  // in run_step: the current step was announced
};

}  // namespace deepmoe
