#include "server/server_metrics.h"

#include <cstdio>

namespace deepmoe::server {
namespace {

std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

void header(std::string& out, const std::string& name, const std::string& type, const std::string& help) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

}  // namespace

void Histogram::observe(double seconds) {
  for (size_t i = 0; i < kBucketsSeconds.size(); ++i) {
    if (seconds <= kBucketsSeconds[i]) {
      ++counts_[i];
      break;
    }
  }
  ++count_;
  sum_ += seconds;
}

void Histogram::write(std::string& out, const std::string& name, const std::string& help) const {
  header(out, name, "histogram", help);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < kBucketsSeconds.size(); ++i) {
    cumulative += counts_[i];
    out += name + "_bucket{le=\"" + number(kBucketsSeconds[i]) + "\"} " + std::to_string(cumulative) + "\n";
  }
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(count_) + "\n";
  out += name + "_sum " + number(sum_) + "\n";
  out += name + "_count " + std::to_string(count_) + "\n";
}

void ServerMetrics::record_request(const std::string& route, int status) {
  std::lock_guard lock(mutex_);
  ++requests_[{route, status}];
}

void ServerMetrics::record_choice(int64_t prompt_tokens, int64_t cached_prompt_tokens, int64_t generated_tokens,
                                  double ttft_seconds, double decode_seconds) {
  std::lock_guard lock(mutex_);
  prompt_tokens_ += uint64_t(prompt_tokens);
  cached_prompt_tokens_ += uint64_t(cached_prompt_tokens);
  generated_tokens_ += uint64_t(generated_tokens);
  if (generated_tokens > 0) ttft_.observe(ttft_seconds);
  if (generated_tokens > 1) tpot_.observe(decode_seconds / double(generated_tokens - 1));
}

void ServerMetrics::record_request_latency(double seconds) {
  std::lock_guard lock(mutex_);
  latency_.observe(seconds);
}

void ServerMetrics::record_cancelled() {
  std::lock_guard lock(mutex_);
  ++cancelled_;
}

std::string ServerMetrics::prometheus_text(const BackendLoad& load, const std::string& engine_text) const {
  std::lock_guard lock(mutex_);
  std::string out;
  header(out, "deepmoe_requests_total", "counter", "HTTP requests answered, by route and status code.");
  for (const auto& [key, count] : requests_)
    out += "deepmoe_requests_total{route=\"" + key.first + "\",status=\"" + std::to_string(key.second) + "\"} " +
           std::to_string(count) + "\n";
  header(out, "deepmoe_requests_cancelled_total", "counter",
         "Generation requests cancelled before they finished (client disconnected, server stopping).");
  out += "deepmoe_requests_cancelled_total " + std::to_string(cancelled_) + "\n";
  header(out, "deepmoe_prompt_tokens_total", "counter", "Prompt tokens of finished choices.");
  out += "deepmoe_prompt_tokens_total " + std::to_string(prompt_tokens_) + "\n";
  header(out, "deepmoe_prompt_tokens_cached_total", "counter",
         "Prompt tokens found in a KV cache and not recomputed.");
  out += "deepmoe_prompt_tokens_cached_total " + std::to_string(cached_prompt_tokens_) + "\n";
  header(out, "deepmoe_generation_tokens_total", "counter", "Tokens generated.");
  out += "deepmoe_generation_tokens_total " + std::to_string(generated_tokens_) + "\n";
  header(out, "deepmoe_num_requests_running", "gauge", "Choices being generated.");
  out += "deepmoe_num_requests_running " + std::to_string(load.running) + "\n";
  header(out, "deepmoe_num_requests_waiting", "gauge", "Choices admitted and waiting to start.");
  out += "deepmoe_num_requests_waiting " + std::to_string(load.waiting) + "\n";
  ttft_.write(out, "deepmoe_time_to_first_token_seconds", "From request arrival to the first generated token.");
  tpot_.write(out, "deepmoe_time_per_output_token_seconds", "Mean time between generated tokens of a choice.");
  latency_.write(out, "deepmoe_e2e_request_latency_seconds", "From request arrival to the last byte of the answer.");
  out += engine_text;
  return out;
}

}  // namespace deepmoe::server
