// The channel between the engine and one API request: the engine pushes each choice's sampled tokens and the
// text they decided, then how the choice ended; the HTTP side waits for what is new. Cancelling it (client gone,
// server stopping) is seen by the engine at its next step, which then ends the choice as cancelled.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/generation_request.h"
#include "runtime/generator.h"
#include "sampling/sampler.h"

namespace deepmoe::server {

struct ChoiceEnd {
  FinishReason reason = FinishReason::None;  // None when cancelled or failed
  bool cancelled = false;
  std::string error;  // non-empty when the engine failed on this choice
  GenerationStats stats;
};

// What arrived for one choice since the last wait().
struct ChoiceUpdate {
  size_t choice = 0;
  std::vector<SampledToken> tokens;
  std::string text;
  std::optional<ChoiceEnd> end;
};

class GenerationStream {
 public:
  explicit GenerationStream(size_t choices);

  size_t choices() const { return choices_.size(); }

  // Engine side.
  void push(size_t choice, const SampledToken& token, std::string_view text);
  void finish(size_t choice, ChoiceEnd end);
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }

  // Client side. Waits up to `timeout` for news; returns one entry per choice with news (empty on timeout).
  std::vector<ChoiceUpdate> wait(std::chrono::milliseconds timeout);
  bool all_finished() const;
  void cancel();

 private:
  struct Pending {
    std::vector<SampledToken> tokens;
    std::string text;
    std::optional<ChoiceEnd> end;
    bool delivered_end = false;
  };
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<Pending> choices_;
  size_t finished_ = 0;
  std::atomic<bool> cancelled_{false};
};

}  // namespace deepmoe::server
