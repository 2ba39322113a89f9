// The server's own Prometheus metrics (names after vLLM's and TGI's, the reliability checklist §4): requests by
// route and status, prompt and generated tokens, time to first token, time per output token and request
// latency histograms. Engine gauges (running/waiting, KV cache, expert load) come from the backend.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "server/generation_backend.h"

namespace deepmoe::server {

class Histogram {
 public:
  static constexpr std::array<double, 14> kBucketsSeconds = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                             0.25,  0.5,    1.0,   2.5,  5.0,   10.0, 30.0};
  void observe(double seconds);
  // Appends the _bucket/_sum/_count lines of `name`.
  void write(std::string& out, const std::string& name, const std::string& help) const;

 private:
  std::array<uint64_t, kBucketsSeconds.size()> counts_{};  // observations <= each bound (not cumulative)
  uint64_t count_ = 0;
  double sum_ = 0.0;
};

class ServerMetrics {
 public:
  void record_request(const std::string& route, int status);
  // One finished choice: its tokens, and its timings (ttft: request arrival to the first token).
  void record_choice(int64_t prompt_tokens, int64_t cached_prompt_tokens, int64_t generated_tokens,
                     double ttft_seconds, double decode_seconds);
  void record_request_latency(double seconds);
  void record_cancelled();

  std::string prometheus_text(const BackendLoad& load, const std::string& engine_text) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  uint64_t prompt_tokens_ = 0, cached_prompt_tokens_ = 0, generated_tokens_ = 0, cancelled_ = 0;
  Histogram ttft_, tpot_, latency_;
};

}  // namespace deepmoe::server
