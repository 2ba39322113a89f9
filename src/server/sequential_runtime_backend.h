// The adapter from the server to today's runtime: one worker thread runs the admitted choices one at a time,
// first come first served, through runtime's Generator on the loaded DeepSeek model, checking for cancellation
// before every step. A small pool of sequences keeps the KV caches of recent prompts, so a request that repeats
// a prefix (the next chat turn, a shared system prompt) reuses it (usage.prompt_tokens_details.cached_tokens).
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "runtime/generator.h"
#include "runtime/loaded_model.h"
#include "server/generation_backend.h"

namespace deepmoe::server {

struct SequentialBackendOptions {
  int64_t max_waiting = 64;     // choices queued beyond the running one; more are refused (HTTP 429)
  size_t cached_sequences = 4;  // KV caches kept for prefix reuse
};

class SequentialRuntimeBackend final : public GenerationBackend {
 public:
  SequentialRuntimeBackend(LoadedModel& model, SequentialBackendOptions options);
  ~SequentialRuntimeBackend() override;

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

  void run();
  void run_job(Job& job);
  LmSequence& sequence_for(const std::vector<int32_t>& prompt);
  void snapshot_engine_metrics();

  LoadedModel& model_;
  SequentialBackendOptions options_;
  Generator generator_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job> queue_;
  std::shared_ptr<GenerationStream> running_;  // the stream of the choice being generated
  bool stopping_ = false;
  std::string engine_metrics_;  // refreshed by the worker between requests

  // Worker thread only.
  struct CachedSequence {
    std::unique_ptr<LmSequence> sequence;
    uint64_t last_used = 0;
  };
  std::vector<CachedSequence> sequences_;
  uint64_t use_clock_ = 0;

  std::thread worker_;
};

}  // namespace deepmoe::server
