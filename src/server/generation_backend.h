// The engine as the server sees it: admit the choices of one request (all or none, against a bounded queue),
// cancel them, and report load and engine metrics. The implementation runs them through the
// runtime's continuous batching (batched_runtime_backend.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/generation_request.h"
#include "server/generation_stream.h"

namespace deepmoe::server {

enum class Admission { Accepted, QueueFull, Stopped };

struct BackendLoad {
  int64_t running = 0;  // choices being generated
  int64_t waiting = 0;  // choices admitted and not started
};

class GenerationBackend {
 public:
  virtual ~GenerationBackend() = default;

  // Queues choices[i] as choice i of `stream` (stream->choices() == choices.size()); requests were validated
  // against the model already (generation_plan.h). All are admitted or none.
  virtual Admission submit(std::vector<GenerationRequest> choices, std::shared_ptr<GenerationStream> stream) = 0;
  // Cancels every choice of `stream`: queued ones end at once, a running one at its next step.
  virtual void cancel(const std::shared_ptr<GenerationStream>& stream) = 0;
  virtual BackendLoad load() const = 0;
  // Engine metrics in Prometheus text format (KV cache, expert load), appended to /metrics.
  virtual std::string metrics_text() const = 0;
  // Cancels everything still queued or running and returns once the engine is idle; later submits are refused.
  virtual void stop() = 0;
};

}  // namespace deepmoe::server
