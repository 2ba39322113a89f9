#include "bench_serving.h"

#include <algorithm>
#include <chrono>
#include <memory>

#include "bench_tokens.h"
#include "core/error.h"
#include "model/config.h"
#include "runtime/batch_scheduler.h"
#include "runtime/deepseek_lm.h"
#include "runtime/generator.h"
#include "tokenizer/tokenizer.h"

namespace deepmoe::tools {
namespace {

using Clock = std::chrono::steady_clock;

double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, size_t(p * double(v.size() - 1) + 0.5));
  return v[i];
}

// The serving prompts: bench_tokens with its own salt space, apart from the other cases'.
std::vector<int32_t> tokens(int64_t n, int64_t vocab, uint64_t salt) {
  return bench_tokens(n, vocab, salt * 0xBF58476D1CE4E5B9ull);
}

struct Timing {
  Clock::time_point first_token{}, last_token{};
  int64_t generated = 0;
};

// Runs `requests` submitted together to completion; per request, when its first and last tokens came.
std::vector<Timing> run(BatchScheduler& scheduler, std::vector<GenerationRequest> requests) {
  std::vector<Timing> timing(requests.size());
  for (size_t i = 0; i < requests.size(); ++i)
    scheduler.add(
        std::move(requests[i]),
        [&timing, i](const RequestState& s, size_t, std::string_view) {
          const auto now = Clock::now();
          if (timing[i].generated == 0) timing[i].first_token = now;
          timing[i].last_token = now;
          timing[i].generated = int64_t(s.tokens.size());
        },
        [i](const RequestState*, bool, const std::string& error) {
          if (!error.empty()) throw Error("bench request " + std::to_string(i) + " failed: " + error);
        });
  while (!scheduler.idle()) scheduler.step();
  return timing;
}

GenerationRequest greedy(std::vector<int32_t> prompt, int64_t max_tokens) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.ignore_eos = true;
  r.sampling.temperature = 0.0;
  return r;
}

}  // namespace

void bench_serving(const ServingBenchArgs& args, const std::string& dir, Engine& engine,
                   const nlohmann::ordered_json& common, const std::function<void(const nlohmann::ordered_json&)>& print) {
  const auto tokenizer = Tokenizer::load(dir);
  const ModelConfig& c = engine.config();
  DeepseekLm lm(engine);
  lm.use_kv_pools(engine.create_kv_pools(default_kv_budget_bytes(engine.weight_bytes(), physical_memory_bytes()), 16));
  Generator generator(lm, *tokenizer);
  const int64_t shared = std::clamp<int64_t>(int64_t(double(args.prompt) * args.shared_prefix), 0, args.prompt - 1);
  const std::vector<int32_t> prefix = tokens(shared, c.vocab_size, 7);
  double first_tokens_per_s = 0;
  int64_t round = 0;
  for (int64_t concurrency : args.concurrency) {
    SchedulerOptions so;
    so.max_running = concurrency;
    so.max_batch_tokens = std::max(args.max_batch_tokens, concurrency);
    BatchScheduler scheduler(generator, so);
    std::vector<GenerationRequest> requests;
    for (int64_t i = 0; i < concurrency; ++i) {
      std::vector<int32_t> p = prefix;
      const auto own = tokens(args.prompt - shared, c.vocab_size, 1000 + uint64_t(round) * 4096 + uint64_t(i));
      p.insert(p.end(), own.begin(), own.end());
      requests.push_back(greedy(std::move(p), args.decode_steps));
    }
    ++round;
    const auto t0 = Clock::now();
    const std::vector<Timing> timing = run(scheduler, std::move(requests));
    const double wall = seconds(t0, Clock::now());
    int64_t generated = 0;
    std::vector<double> ttft, tpot;
    for (const Timing& t : timing) {
      generated += t.generated;
      ttft.push_back(seconds(t0, t.first_token));
      if (t.generated > 1) tpot.push_back(seconds(t.first_token, t.last_token) / double(t.generated - 1));
    }
    const double tokens_per_s = double(generated) / wall;
    if (first_tokens_per_s == 0) first_tokens_per_s = tokens_per_s;
    nlohmann::ordered_json j = common;
    j["case"] = "serving";
    j["concurrency"] = concurrency;
    j["prompt_tokens"] = args.prompt;
    j["shared_prefix_tokens"] = shared;
    j["new_tokens_per_request"] = args.decode_steps;
    j["seconds"] = wall;
    j["output_tokens_per_s"] = tokens_per_s;
    j["over_first_concurrency"] = tokens_per_s / first_tokens_per_s;
    j["ttft_p50_s"] = percentile(ttft, 0.5);
    j["ttft_p99_s"] = percentile(ttft, 0.99);
    j["tpot_p50_s"] = percentile(tpot, 0.5);
    j["tpot_p99_s"] = percentile(tpot, 0.99);
    print(j);
  }

  // The prefix cache: a 1,000-token prompt, then another that shares it and adds 16 tokens.
  SchedulerOptions so;
  so.max_batch_tokens = std::max<int64_t>(args.max_batch_tokens, 1024);
  BatchScheduler scheduler(generator, so);
  const int64_t n = std::min<int64_t>(1000, c.max_position_embeddings - 40);
  std::vector<int32_t> first = tokens(n, c.vocab_size, 99);
  std::vector<int32_t> second = first;
  const auto tail = tokens(16, c.vocab_size, 100);
  second.insert(second.end(), tail.begin(), tail.end());
  double ttft[2];
  int64_t cached = 0;
  for (int k = 0; k < 2; ++k) {
    const auto t0 = Clock::now();
    Clock::time_point at{};
    scheduler.add(
        greedy(k == 0 ? first : second, 1),
        [&at](const RequestState&, size_t, std::string_view) { at = Clock::now(); },
        [&cached](const RequestState* s, bool, const std::string& error) {
          if (!error.empty()) throw Error("bench prefix request failed: " + error);
          if (s) cached = s->stats.cached_prompt_tokens;
        });
    while (!scheduler.idle()) scheduler.step();
    ttft[k] = seconds(t0, at);
  }
  nlohmann::ordered_json j = common;
  j["case"] = "prefix";
  j["shared_tokens"] = n;
  j["cached_tokens"] = cached;
  j["ttft_first_s"] = ttft[0];
  j["ttft_second_s"] = ttft[1];
  j["second_over_first"] = ttft[1] / ttft[0];
  print(j);
}

}  // namespace deepmoe::tools
