// The adapter from the server to the runtime's continuous batching: one worker thread runs a BatchScheduler over
// the loaded model. Admitted choices join the running batch at the next step (up to max_running at once, while
// the paged KV cache can hold them); prompts are prefilled in chunks between decode steps, so a long prompt does
// not stall the replies already streaming. The KV cache is a byte budget of blocks with a prefix cache: a request
// that repeats a prefix (the next chat turn, a shared system prompt) reuses its full blocks
// (usage.prompt_tokens_details.cached_tokens). Cancellation is checked before every step. With draft_tokens > 0
// every request decodes speculatively with the checkpoint's MTP module (same greedy text, same distribution when
// sampling; /metrics adds the drafts proposed and accepted).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "runtime/batch_scheduler.h"
#include "runtime/generator.h"
#include "runtime/loaded_model.h"
#include "runtime/speculative_mtp_lm.h"
#include "server/generation_backend.h"

namespace deepmoe::server {

struct BatchedBackendOptions {
  int64_t max_waiting = 64;       // choices queued and not yet running; more are refused (HTTP 429)
  int64_t max_running = 16;       // choices generating at once
  int64_t max_batch_tokens = 256;  // tokens per engine step (decode tokens + prompt chunks)
  uint64_t kv_bytes = 0;          // KV cache budget; 0: what memory allows after the weights (kv_block_pool.h)
  int64_t kv_block_tokens = 16;   // tokens per KV block, the prefix cache's granularity
  int draft_tokens = 0;           // MTP speculative decoding: drafts per request and step (0: off)
};

class BatchedRuntimeBackend final : public GenerationBackend {
 public:
  BatchedRuntimeBackend(LoadedModel& model, BatchedBackendOptions options);
  ~BatchedRuntimeBackend() override;

  Admission submit(std::vector<GenerationRequest> choices, std::shared_ptr<GenerationStream> stream) override;
  void cancel(const std::shared_ptr<GenerationStream>& stream) override;
  BackendLoad load() const override;
  std::string metrics_text() const override;
  void stop() override;

 private:
  struct Job {
    GenerationRequest request;
    std::shared_ptr<GenerationStream> stream;
    size_t choice = 0;
  };
  struct Running {
    std::shared_ptr<GenerationStream> stream;
    size_t choice = 0;
  };

  void run();
  void take_new_jobs(std::deque<Job>& jobs);
  void snapshot_engine_metrics();
  void finished_one();

  LoadedModel& model_;
  BatchedBackendOptions options_;
  std::unique_ptr<MtpSpeculativeLm> speculative_lm_;  // with draft_tokens > 0
  CausalLm& lm_;                                      // the model the scheduler runs
  Generator generator_;
  std::unique_ptr<BatchScheduler> scheduler_;  // worker thread only

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job> inbox_;
  int64_t in_flight_ = 0;      // choices admitted and not finished (queued, waiting or running)
  int64_t running_count_ = 0;  // the scheduler's running requests, as of its last step
  bool stopping_ = false;
  std::string engine_metrics_;
  std::chrono::steady_clock::time_point kv_usage_at_{};  // when the ranks' KV blocks were last counted
  std::vector<KvUsage> kv_usage_;

  std::map<uint64_t, Running> active_;  // worker thread only: scheduler id → its stream slot, until it ends
  std::vector<uint64_t> ended_;         // worker thread only: ids whose end the scheduler reported
  std::thread worker_;
};

}  // namespace deepmoe::server
