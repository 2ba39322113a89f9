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
#include "runtime/speculative_mtp_lm.h"
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
  std::vector<int32_t> tokens;
};

// The steps after the last one that gave some request its first token: every prompt is in, and each step only
// decodes. Their tokens over their wall time is the decode throughput at this concurrency, apart from prefill.
struct DecodePhase {
  int64_t steps = 0, tokens = 0;
  double seconds = 0;
};

// Runs `requests` submitted together to completion; per request, when its first and last tokens came.
std::vector<Timing> run(BatchScheduler& scheduler, std::vector<GenerationRequest> requests,
                        DecodePhase* decode_phase = nullptr) {
  std::vector<Timing> timing(requests.size());
  int64_t step_tokens = 0;
  bool step_started_a_request = false;
  for (size_t i = 0; i < requests.size(); ++i)
    scheduler.add(
        std::move(requests[i]),
        [&timing, &step_tokens, &step_started_a_request, i](const RequestState& s, size_t, std::string_view) {
          const auto now = Clock::now();
          if (timing[i].generated == 0) timing[i].first_token = now, step_started_a_request = true;
          timing[i].last_token = now;
          step_tokens += int64_t(s.tokens.size()) - timing[i].generated;
          timing[i].generated = int64_t(s.tokens.size());
        },
        [&timing, i](const RequestState* s, bool, const std::string& error) {
          if (!error.empty()) throw Error("bench request " + std::to_string(i) + " failed: " + error);
          if (s)
            for (const SampledToken& t : s->tokens) timing[i].tokens.push_back(t.token);
        });
  DecodePhase phase;
  while (!scheduler.idle()) {
    step_tokens = 0;
    step_started_a_request = false;
    const auto t0 = Clock::now();
    scheduler.step();
    if (step_started_a_request) {
      phase = {};
    } else {
      phase.steps += 1;
      phase.tokens += step_tokens;
      phase.seconds += seconds(t0, Clock::now());
    }
  }
  if (decode_phase) *decode_phase = phase;
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

// Output tokens over the wall time, and the time per output token after each request's first.
struct RunFigures {
  double wall_s = 0, decode_s = 0;
  int64_t generated = 0, decoded = 0;
};

void add_run(RunFigures& f, Clock::time_point t0, const std::vector<Timing>& timing) {
  f.wall_s += seconds(t0, Clock::now());
  for (const Timing& t : timing) {
    f.generated += t.generated;
    if (t.generated > 1) f.decoded += t.generated - 1, f.decode_s += seconds(t.first_token, t.last_token);
  }
}

// One verification forward of C entries of K + 1 positions (logits and hidden states at each, as the MTP adapter
// asks) against one plain decode forward of C entries of one position, alternated on the same cached contexts
// and rolled back each time: seconds of each, summed over `pairs`.
std::pair<double, double> verify_and_decode_forward(Engine& engine, int64_t concurrency, int draft_tokens,
                                                    int64_t context, int64_t pairs) {
  const ModelConfig& c = engine.config();
  std::vector<std::unique_ptr<EngineSequence>> seqs;
  std::vector<EngineInput> prefill;
  for (int64_t i = 0; i < concurrency; ++i) {
    seqs.push_back(engine.create_sequence());
    prefill.push_back(EngineInput::last(seqs.back().get(), tokens(context, c.vocab_size, 5000 + uint64_t(i))));
  }
  engine.forward(prefill);
  double verify_s = 0, decode_s = 0;
  for (int64_t p = -1; p < pairs; ++p) {  // p = -1 warms up, untimed
    std::vector<EngineInput> verify, decode;
    for (int64_t i = 0; i < concurrency; ++i) {
      const auto fed = tokens(draft_tokens + 1, c.vocab_size, 9000 + uint64_t(p + 1) * 1024 + uint64_t(i));
      EngineInput v = EngineInput::all(seqs[size_t(i)].get(), fed);
      v.hidden_of_all_tokens = true;
      verify.push_back(std::move(v));
      decode.push_back(EngineInput::last(seqs[size_t(i)].get(), {fed[0]}));
    }
    double vs = 0, ds = 0;
    // In the other order every other pair (the first of two runs back to back is favoured on a busy machine).
    for (int k = 0; k < 2; ++k) {
      const bool verify_now = (k == 0) == (p % 2 == 0);
      Tensor hidden;
      const auto t0 = Clock::now();
      if (verify_now)
        engine.forward(verify, &hidden);
      else
        engine.forward(decode);
      (verify_now ? vs : ds) = seconds(t0, Clock::now());
      for (auto& s : seqs) s->main.truncate(context);
    }
    if (p >= 0) verify_s += vs, decode_s += ds;
  }
  return {verify_s, decode_s};
}

}  // namespace

void bench_serving(const ServingBenchArgs& args, const std::string& dir, Engine& engine,
                   const nlohmann::ordered_json& common, const std::function<void(const nlohmann::ordered_json&)>& print) {
  const auto tokenizer = Tokenizer::load(dir);
  const ModelConfig& c = engine.config();
  DeepseekLm lm(engine);
  const KvPools pools =
      engine.create_kv_pools(default_kv_budget_bytes(engine.weight_bytes(), physical_memory_bytes()), 16);
  lm.use_kv_pools(pools);
  Generator generator(lm, *tokenizer);
  std::unique_ptr<MtpSpeculativeLm> mtp_lm;
  std::unique_ptr<Generator> mtp_generator;
  if (args.draft_tokens > 0 && engine.has_mtp()) {
    mtp_lm = std::make_unique<MtpSpeculativeLm>(engine);
    mtp_lm->use_kv_pools(pools);
    mtp_generator = std::make_unique<Generator>(*mtp_lm, *tokenizer);
  }
  const int64_t shared = std::clamp<int64_t>(int64_t(double(args.prompt) * args.shared_prefix), 0, args.prompt - 1);
  const std::vector<int32_t> prefix = tokens(shared, c.vocab_size, 7);
  double first_tokens_per_s = 0, first_decode_tokens_per_s = 0;
  int64_t round = 0;
  // Request i's own prompt part is drawn with salt first_salt + i.
  auto workload = [&](int64_t concurrency, uint64_t first_salt) {
    std::vector<GenerationRequest> requests;
    for (int64_t i = 0; i < concurrency; ++i) {
      std::vector<int32_t> p = prefix;
      const auto own = tokens(args.prompt - shared, c.vocab_size, first_salt + uint64_t(i));
      p.insert(p.end(), own.begin(), own.end());
      requests.push_back(greedy(std::move(p), args.decode_steps));
    }
    return requests;
  };
  // The "serving_speculative" line of one concurrency (see bench_serving.h).
  auto bench_speculative_serving = [&](int64_t concurrency) {
    nlohmann::ordered_json j = common;
    j["case"] = "serving_speculative";
    j["concurrency"] = concurrency;
    j["draft_tokens"] = args.draft_tokens;
    j["new_tokens_per_request"] = args.decode_steps;
    if (mtp_lm) {
      SchedulerOptions so;
      so.max_running = concurrency;
      so.max_batch_tokens = std::max(args.max_batch_tokens, concurrency * (args.draft_tokens + 1));
      BatchScheduler plain(generator, so);
      so.draft_tokens = args.draft_tokens;
      BatchScheduler speculative(*mtp_generator, so);
      RunFigures a, b;
      bool identical = true;
      for (int r = 0; r <= args.rounds; ++r) {  // round 0 warms up, untimed
        const auto requests = workload(concurrency, (1u << 30) + (uint64_t(concurrency) * 64 + uint64_t(r)) * 4096);
        std::vector<Timing> out[2];
        // Alternated, and in the other order every other round (a drifting machine favours neither).
        for (int k = 0; k < 2; ++k) {
          const bool spec = (k == 1) == (r % 2 == 0);
          pools.main->evict_cached();
          const auto t0 = Clock::now();
          out[spec] = run(spec ? speculative : plain, requests);
          if (r > 0) add_run(spec ? b : a, t0, out[spec]);
        }
        for (size_t i = 0; i < out[0].size(); ++i) identical = identical && out[0][i].tokens == out[1][i].tokens;
      }
      const SpeculationCounters& s = speculative.speculation();
      j["rounds"] = args.rounds;
      j["draft_acceptance_rate"] = s.draft_tokens > 0 ? double(s.accepted_draft_tokens) / double(s.draft_tokens) : 0.0;
      j["accepted_tokens_per_step"] =
          s.verify_steps > 0 ? double(s.accepted_draft_tokens) / double(s.verify_steps) : 0.0;
      j["plain_output_tokens_per_s"] = double(a.generated) / a.wall_s;
      j["speculative_output_tokens_per_s"] = double(b.generated) / b.wall_s;
      j["throughput_speedup"] = (double(b.generated) / b.wall_s) / (double(a.generated) / a.wall_s);
      j["plain_tpot_s"] = a.decode_s / double(a.decoded);
      j["speculative_tpot_s"] = b.decode_s / double(b.decoded);
      j["decode_speedup"] = (a.decode_s / double(a.decoded)) / (b.decode_s / double(b.decoded));
      j["outputs_identical"] = identical;
    } else {
      j["generation"] = "skipped: the checkpoint has no MTP layer";
    }
    const int64_t pairs = std::max<int64_t>(args.decode_steps, 4);
    const auto [verify_s, decode_s] =
        verify_and_decode_forward(engine, concurrency, args.draft_tokens, std::min<int64_t>(args.prompt, 256), pairs);
    j["forward_pairs"] = pairs;
    j["verify_forward_seconds"] = verify_s / double(pairs);
    j["decode_forward_seconds"] = decode_s / double(pairs);
    j["verify_over_decode_forward"] = verify_s / decode_s;
    print(j);
  };
  for (int64_t concurrency : args.concurrency) {
    SchedulerOptions so;
    so.max_running = concurrency;
    so.max_batch_tokens = std::max(args.max_batch_tokens, concurrency);
    BatchScheduler scheduler(generator, so);
    std::vector<GenerationRequest> requests = workload(concurrency, 1000 + uint64_t(round) * 4096);
    ++round;
    const auto t0 = Clock::now();
    DecodePhase phase;
    const std::vector<Timing> timing = run(scheduler, std::move(requests), &phase);
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
    const double decode_tokens_per_s = phase.seconds > 0 ? double(phase.tokens) / phase.seconds : 0.0;
    if (first_decode_tokens_per_s == 0) first_decode_tokens_per_s = decode_tokens_per_s;
    nlohmann::ordered_json j = common;
    j["case"] = "serving";
    j["concurrency"] = concurrency;
    j["prompt_tokens"] = args.prompt;
    j["shared_prefix_tokens"] = shared;
    j["new_tokens_per_request"] = args.decode_steps;
    j["seconds"] = wall;
    j["output_tokens_per_s"] = tokens_per_s;
    j["over_first_concurrency"] = tokens_per_s / first_tokens_per_s;
    j["decode_phase_steps"] = phase.steps;
    j["decode_phase_tokens_per_s"] = decode_tokens_per_s;
    j["decode_phase_over_first_concurrency"] =
        first_decode_tokens_per_s > 0 ? decode_tokens_per_s / first_decode_tokens_per_s : 0.0;
    j["ttft_p50_s"] = percentile(ttft, 0.5);
    j["ttft_p99_s"] = percentile(ttft, 0.99);
    j["tpot_p50_s"] = percentile(tpot, 0.5);
    j["tpot_p99_s"] = percentile(tpot, 0.99);
    print(j);
    if (args.draft_tokens > 0) bench_speculative_serving(concurrency);
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
