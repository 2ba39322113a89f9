// The engine every model-running command drives (DESIGN.md §1): one job over the ranks of a communicator (one
// process, threads, or an MPI launch). Rank 0 — the leader — holds the requests, their sequences and KV caches,
// reads the input and writes the output; it calls forward() and forward_mtp() as a single process would. Every
// other rank — a follower — calls follow(), which runs each of the leader's steps with no tokens of its own: the
// step's MoE layers still go through the all-to-all, so the routed experts are spread over all ranks (with the
// redundant experts and live rebalance of the executor) while the output is byte for byte that of one process.
//
// Before each step the leader announces it (parallel/leader_broadcast.h), after the step's input passed its checks.
// An error inside a step, once other ranks take part, cannot be undone: the leader ends the job
// (Communicator::abort — every rank exits non-zero) instead of leaving the followers waiting.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "runtime/executor.h"

namespace deepmoe {

class Communicator;

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

  // Follower: runs the leader's steps until the leader calls finish(). Errors (a step that failed on this rank)
  // propagate; the communicator has then ended the job.
  void follow();
  // Leader: releases the followers from follow(). Later steps are an error. Called again, it does nothing.
  void finish();

  const ModelConfig& config() const;
  const ExecutorOptions& options() const;
  bool has_mtp() const;
  uint64_t weight_bytes() const;

  // The leader's sequences (model/transformer.h).
  std::unique_ptr<Sequence> create_sequence() const;
  KvPools create_kv_pools(uint64_t budget_bytes, int64_t block_tokens = 64) const;
  std::unique_ptr<Sequence> create_sequence(const KvPools& pools, std::span<const int32_t> prompt = {}) const;

  // Leader: one step on every rank (Executor::forward / forward_mtp).
  Tensor forward(const std::vector<SequenceInput>& batch, Tensor* hidden = nullptr);
  Tensor forward_mtp(const std::vector<MtpInput>& batch, Tensor* hidden = nullptr);
  // Leader: re-places the experts from the load statistics on every rank (Executor::rebalance).
  void rebalance();

  // This rank's executor: placement, load statistics, trace (identical statistics on every rank).
  Executor& executor() { return *executor_; }
  const Executor& executor() const { return *executor_; }

 private:
  enum class Step : int64_t { Forward = 1, ForwardMtp = 2, Rebalance = 3, Finish = 4 };

  Engine(std::unique_ptr<Executor> executor, Communicator& comm);
  void require_leader(const char* what) const;
  void announce(Step step);
  // Runs `body` (a step on the leader); an error after the step was announced ends the job.
  template <class Body>
  auto run_step(Step step, Body&& body);

  std::unique_ptr<Communicator> own_comm_;  // declared first: destroyed after the executor that uses it
  std::unique_ptr<Executor> executor_;
  Communicator& comm_;
  bool finished_ = false;
};

}  // namespace deepmoe
