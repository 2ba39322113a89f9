// `deepmoe bench DIR`: end-to-end speed of a checkpoint as ratios to this machine's limits, measured in the same
// run (DESIGN.md §7). One JSON line per case:
//   load     — peak RSS while loading vs the checkpoint's tensor bytes (FP8 weights are used in place from the mmap)
//   machine  — STREAM-triad bandwidth and FP32 FMA peak (core/machine_limits.h), measured right before each
//              timed case on triad arrays allocated before the checkpoint is loaded (see run_bench); each case's
//              fractions use the machine line measured just before it ("before" names the case and prefill run)
//   prefill  — tokens/s of one prompt, the fastest of --prefill-runs timed runs (after an untimed warm-up prompt of
//              the same length), in the engine's steps of at most --forward-chunk positions as every command runs
//              it; projection FLOPs (2·active projection parameters per token) ÷ time as a fraction of the FMA peak.
//              The time includes attention, norms and routing, so this understates the GEMM
//              kernels' own efficiency; gemm_* give the GEMM share itself: the FLOPs the GEMM calls performed over
//              the time spent inside them (kernels/gemm.h gemm_counters), and that time's share of the total;
//              attention_* the same for the attention cores (kernels/attention.h attention_counters), whose FLOPs
//              per token grow with the prompt: their fraction of the FMA peak shows whether the cost per FLOP
//              grows too.
//              With --trace FILE the reported run's compute and communication spans (per micro-batch) are
//              written as Chrome-trace JSON (Perfetto).
//   decode   — tokens/s at batch B after the prompt; weight bytes a step reads (model_summary.h: all non-expert
//              weights, lm_head, and the experts the batch selects) × steps/s ÷ STREAM bandwidth = achieved
//              fraction of the bandwidth roofline; gemm_share_of_time as for prefill.
//   speculative — with --speculative mtp: greedy generation of --decode-steps tokens at batch 1 after a short
//              prompt, with the plain loop and with MTP speculative decoding (--draft-tokens K), alternated over
//              --speculative-rounds rounds in this one run: draft acceptance rate, tokens per verification step,
//              decode tokens/s of both and their ratio (the speedup; also per process CPU second, which the
//              other work on a shared machine does not inflate), whether the outputs were identical; and the
//              cost of one verification forward (K + 1 positions, logits at each) over a plain decode forward
//              (one position), also alternated (the only part measured when the checkpoint has no MTP layer),
//              and with an MTP layer one draft forward (the MTP module on one position) in the same alternation.
//              With --concurrency too: the same comparison in the batch scheduler per concurrency
//              ("serving_speculative", tools/bench_serving.h).
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>

#include "command.h"
#include "core/error.h"
#include "core/machine_limits.h"
#include "core/thread_pool.h"
#include "kernels/attention.h"
#include "kernels/gemm.h"
#include "bench_serving.h"
#include "bench_tokens.h"
#include "checkpoint/model_summary.h"
#include "engine_options.h"
#include "model/config.h"
#include "parallel/chrome_trace.h"
#include "parallel/communicator.h"
#include "runtime/deepseek_lm.h"
#include "runtime/generator.h"
#include "runtime/speculative_generator.h"
#include "runtime/speculative_mtp_lm.h"
#include "tokenizer/tokenizer.h"

namespace deepmoe::tools {
namespace {

struct BenchArgs {
  EngineArgs engine;
  int64_t prompt = 512;
  int64_t forward_chunk = -1;  // -1: the engine's default
  int prefill_runs = 3;
  int64_t decode_steps = 16;
  std::vector<int64_t> batches = {1, 8};
  std::string trace;
  std::string speculative = "off";
  int draft_tokens = 1;
  int speculative_rounds = 3;
  ServingBenchArgs serving;
};

// A "Field:  N kB" line of a /proc file of this process, in bytes (0 when absent).
uint64_t proc_kb_field_bytes(const char* file, const char* field) {
  std::ifstream in(file);
  std::string line;
  const size_t n = std::strlen(field);
  while (std::getline(in, line))
    if (line.compare(0, n, field) == 0 && line.size() > n && line[n] == ':')
      return uint64_t(std::stoull(line.substr(n + 1))) * 1024;
  return 0;
}

// VmHWM / VmRSS of this process in bytes (Linux /proc/self/status).
uint64_t proc_status_bytes(const char* field) { return proc_kb_field_bytes("/proc/self/status", field); }

// Bytes of file pages this process maps with 2 MB page-table entries: the checkpoint's weights are read at the
// memory's full rate only when the page cache holds them in 2 MB folios (core/huge_page_mapping.h).
uint64_t file_pmd_mapped_bytes() { return proc_kb_field_bytes("/proc/self/smaps_rollup", "FilePmdMapped"); }

// CPU seconds of the whole process: on a machine shared with other work the wall clock also counts the time the
// scheduler gave to others, which CPU time does not (with one thread, the work the step itself did).
double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void print_line(const nlohmann::ordered_json& j) {
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

// Resets this process's peak RSS (VmHWM) to its current RSS; false where the kernel does not allow it.
bool reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  f.flush();
  return bool(f);
}

// The "speculative" case (see the top of the file). Greedy, so both loops must produce the same tokens.
void bench_speculative(const BenchArgs& args, const std::string& dir, Engine& model, const nlohmann::ordered_json& common,
                       const std::function<MachineLimits(const std::string&)>& measure_machine) {
  const ModelConfig& c = model.config();
  const std::vector<int32_t> prompt = bench_tokens(32, c.vocab_size, 300);
  measure_machine("speculative");  // the machine line next to the figures (they are ratios of two timings)
  nlohmann::ordered_json j = common;
  j["case"] = "speculative";
  j["method"] = "mtp";
  j["draft_tokens"] = args.draft_tokens;

  // Greedy generation, plain and speculative alternated. Needs the MTP layer; without one only the forward
  // costs below are measured (they need no draft model).
  if (model.has_mtp()) {
    const auto tokenizer = Tokenizer::load(dir);
    DeepseekLm plain_lm(model);
    MtpSpeculativeLm mtp_lm(model);
    Generator plain(plain_lm, *tokenizer);
    SpeculativeGenerator speculative(mtp_lm, *tokenizer, args.draft_tokens);
    GenerationRequest request;
    request.prompt = prompt;
    request.max_tokens = args.decode_steps + 1;  // the first token comes with the prefill
    request.ignore_eos = true;
    request.sampling.temperature = 0.0;
    double plain_s = 0, spec_s = 0, plain_cpu = 0, spec_cpu = 0;
    int64_t plain_tokens = 0, spec_tokens = 0;
    GenerationStats totals;
    bool identical = true;
    // Steps one request to its end; returns the process CPU seconds of the decode steps (every step after the
    // first, which is the prefill), as stats.decode_seconds holds their wall time.
    auto run = [](auto& generator, const GenerationRequest& r, LmSequence& seq, double& decode_cpu) {
      auto state = generator.start(r, seq);
      generator.step(*state);
      const double c0 = process_cpu_seconds();
      while (!state->done()) generator.step(*state);
      decode_cpu += process_cpu_seconds() - c0;
      return state;
    };
    for (int round = 0; round <= args.speculative_rounds; ++round) {  // round 0 warms up, untimed
      double a_cpu = 0, b_cpu = 0;
      auto plain_seq = plain_lm.new_sequence();
      const auto a = run(plain, request, *plain_seq, a_cpu);
      auto spec_seq = mtp_lm.new_sequence();
      const auto b = run(speculative, request, *spec_seq, b_cpu);
      for (size_t i = 0; i < a->tokens.size(); ++i)
        identical = identical && i < b->tokens.size() && a->tokens[i].token == b->tokens[i].token;
      identical = identical && a->tokens.size() == b->tokens.size();
      if (round == 0) continue;
      plain_cpu += a_cpu, spec_cpu += b_cpu;
      plain_s += a->stats.decode_seconds;
      plain_tokens += a->stats.generated_tokens - 1;
      spec_s += b->stats.decode_seconds;
      spec_tokens += b->stats.generated_tokens - 1;
      totals.verify_steps += b->stats.verify_steps;
      totals.draft_tokens += b->stats.draft_tokens;
      totals.accepted_draft_tokens += b->stats.accepted_draft_tokens;
    }
    j["rounds"] = args.speculative_rounds;
    j["tokens_per_round"] = args.decode_steps;
    j["draft_acceptance_rate"] = totals.draft_acceptance_rate();
    j["tokens_per_verify_step"] = totals.tokens_per_verify_step();
    j["plain_decode_tokens_per_s"] = double(plain_tokens) / plain_s;
    j["speculative_decode_tokens_per_s"] = double(spec_tokens) / spec_s;
    j["decode_speedup"] = (double(spec_tokens) / spec_s) / (double(plain_tokens) / plain_s);
    j["plain_decode_tokens_per_cpu_s"] = double(plain_tokens) / plain_cpu;
    j["speculative_decode_tokens_per_cpu_s"] = double(spec_tokens) / spec_cpu;
    j["decode_speedup_cpu"] = (double(spec_tokens) / spec_cpu) / (double(plain_tokens) / plain_cpu);
    j["outputs_identical"] = identical;
  } else {
    j["generation"] = "skipped: the checkpoint has no MTP layer";
  }

  // One verification forward (the last token + K drafts, logits and hidden states at each, as the MTP adapter
  // asks) against one plain decode forward, alternated on the same cached prompt and rolled back each time; with
  // an MTP layer also one draft forward (the MTP module on one position, logits and output state, as each
  // recurrent draft runs it) after the prompt's MTP positions.
  auto seq = model.create_sequence();
  EngineInput prefill = EngineInput::last(seq.get(), prompt);
  prefill.hidden_of_all_tokens = model.has_mtp();
  Tensor prompt_hidden;
  model.forward({prefill}, &prompt_hidden);
  const int64_t base = seq->length(), H = c.hidden_size;
  auto mtp_input = [&](int64_t first, int64_t n, std::vector<int32_t> next_tokens) {
    EngineMtpInput in;
    in.sequence = seq.get();
    in.hidden = Tensor::zeros(DType::F32, {n, H});
    std::copy_n(prompt_hidden.data<const float>() + first * H, n * H, in.hidden.data<float>());
    in.next_tokens = std::move(next_tokens);
    in.logit_indices = {n - 1};
    return in;
  };
  if (model.has_mtp())  // MTP position i sees the main state at i and token i + 1
    model.forward_mtp({mtp_input(0, base - 1, std::vector<int32_t>(prompt.begin() + 1, prompt.end()))});
  const std::vector<int32_t> verify_tokens = bench_tokens(args.draft_tokens + 1, c.vocab_size, 400);
  double verify_s = 0, decode_s = 0, draft_s = 0, verify_cpu = 0, decode_cpu = 0, draft_cpu = 0;
  for (int64_t i = -1; i < args.decode_steps; ++i) {  // i = -1 warms up, untimed
    EngineInput v = EngineInput::all(seq.get(), verify_tokens);
    v.hidden_of_all_tokens = true;
    Tensor hidden;
    auto t0 = std::chrono::steady_clock::now();
    double c0 = process_cpu_seconds();
    model.forward({v}, &hidden);
    const double vs = seconds_since(t0), vc = process_cpu_seconds() - c0;
    seq->main.truncate(base);
    t0 = std::chrono::steady_clock::now();
    c0 = process_cpu_seconds();
    model.forward({EngineInput::last(seq.get(), {verify_tokens[0]})});
    const double ds = seconds_since(t0), dc = process_cpu_seconds() - c0;
    seq->main.truncate(base);
    double fs = 0, fc = 0;
    if (model.has_mtp()) {
      const EngineMtpInput draft = mtp_input(base - 1, 1, {verify_tokens[0]});
      Tensor out_hidden;
      t0 = std::chrono::steady_clock::now();
      c0 = process_cpu_seconds();
      model.forward_mtp({draft}, &out_hidden);
      fs = seconds_since(t0), fc = process_cpu_seconds() - c0;
      seq->mtp.truncate(base - 1);
    }
    if (i >= 0) verify_s += vs, decode_s += ds, draft_s += fs, verify_cpu += vc, decode_cpu += dc, draft_cpu += fc;
  }
  j["forward_pairs"] = args.decode_steps;
  j["verify_forward_seconds"] = verify_s / double(args.decode_steps);
  j["decode_forward_seconds"] = decode_s / double(args.decode_steps);
  j["verify_over_decode_forward"] = verify_s / decode_s;
  j["verify_over_decode_forward_cpu"] = verify_cpu / decode_cpu;
  if (model.has_mtp()) {
    j["draft_forward_seconds"] = draft_s / double(args.decode_steps);
    j["draft_over_decode_forward"] = draft_s / decode_s;
    j["draft_over_decode_forward_cpu"] = draft_cpu / decode_cpu;
  }
  print_line(j);
}

void bench_on_leader(const BenchArgs& args, const std::string& dir, Engine& engine, MachineProbe& probe,
                     uint64_t rss_before, double load_s, int threads);

void run_bench(const BenchArgs& args) {
  // The triad arrays are allocated and touched before the checkpoint is loaded: allocated after the weights fill
  // memory they come from reclaimed, scattered pages and STREAM reads up to 40% low, which would flatter every
  // fraction below. The machine's speed also drifts within a run, so it is measured again right before each case.
  // The arrays (3 × 256 MiB) stay resident for the whole run, beside the checkpoint's pages. Only rank 0 measures
  // (under mpirun the other ranks follow its steps).
  std::unique_ptr<ThreadPool> probe_pool;
  std::unique_ptr<MachineProbe> probe;
  uint64_t rss_before = 0;
  std::chrono::steady_clock::time_point t_load;
  int threads = 0;
  EngineJob job = open_engine_job(args.engine, /*with_tokenizer=*/false, [&](ExecutorOptions& o) {
    threads = o.threads > 0 ? o.threads : ThreadPool::hardware_threads();
    if (args.forward_chunk >= 0) o.forward_chunk_tokens = args.forward_chunk;
  }, [&] {
    load_model_config(args.engine.model_dir.empty() ? default_model_dir() : args.engine.model_dir);
    probe_pool = std::make_unique<ThreadPool>(threads);
    probe = std::make_unique<MachineProbe>(probe_pool.get());
    reset_peak_rss();  // where allowed, the load peak below is that of loading alone
    rss_before = proc_status_bytes("VmRSS");
    t_load = std::chrono::steady_clock::now();
  });
  run_engine_job(job, [&] {
    bench_on_leader(args, job.model.dir, job.engine(), *probe, rss_before, seconds_since(t_load), threads);
  });
}

// Rank 0's part: every case, printed as it is measured.
void bench_on_leader(const BenchArgs& args, const std::string& dir, Engine& engine, MachineProbe& probe,
                     uint64_t rss_before, double load_s, int threads) {
  const uint64_t load_hwm = proc_status_bytes("VmHWM");
  const ModelConfig& c = engine.config();
  const uint64_t file_bytes = engine.weight_bytes();
  nlohmann::ordered_json common;
  common["model"] = dir;
  common["ranks"] = engine.ranks();
  common["arch"] = std::string(model_arch_name(c.arch));
  common["layers"] = c.num_hidden_layers;
  common["fp8"] = c.fp8;
  common["gemm"] = gemm_mode_name(engine.options().gemm);  // what --gemm (auto by default) resolved to
  common["threads"] = threads;
  common["forward_chunk_tokens"] = engine.options().forward_chunk_tokens;

  nlohmann::ordered_json load = common;
  load["case"] = "load";
  load["seconds"] = load_s;
  load["tensor_bytes"] = file_bytes;
  load["rss_before_bytes"] = rss_before;
  load["peak_rss_bytes"] = load_hwm;
  load["file_pmd_mapped_bytes"] = file_pmd_mapped_bytes();
  // The probe's arrays stay resident through the load; they are not the checkpoint's.
  load["machine_probe_bytes"] = probe.bytes();
  const uint64_t model_peak = load_hwm > probe.bytes() ? load_hwm - probe.bytes() : 0;
  load["peak_rss_over_file"] = double(model_peak) / double(std::max<uint64_t>(file_bytes, 1));
  // The paged latent KV cache: (kv_lora_rank + rope dims) × dtype bytes per token per layer, and the budget a
  // server takes by default (model/kv_block_pool.h).
  const DType kv_dtype = engine.options().kv_dtype;
  const uint64_t kv_row_bytes = uint64_t(c.kv_lora_rank + c.qk_rope_head_dim) * dtype_size_bytes(kv_dtype);
  load["kv_dtype"] = std::string(dtype_name(kv_dtype));
  load["kv_bytes_per_token_per_layer"] = kv_row_bytes;
  load["kv_bytes_per_token"] = kv_row_bytes * uint64_t(c.num_hidden_layers);
  load["kv_default_budget_bytes"] = default_kv_budget_bytes(file_bytes, physical_memory_bytes());
  print_line(load);

  const auto measure_machine = [&](const std::string& before) {
    const MachineLimits limits = probe.measure();
    nlohmann::ordered_json machine = common;
    machine["case"] = "machine";
    machine["before"] = before;
    machine["stream_triad_gbps"] = limits.stream_triad_gbps;
    machine["fma_peak_gflops"] = limits.fma_peak_gflops;
    machine["isa"] = limits.isa;
    print_line(machine);
    return limits;
  };

  // Prefill: one prompt of --prompt tokens from an empty cache, logits of the last position only, timed
  // --prefill-runs times (each after its own machine line); the fastest run is reported, with its machine line's
  // limits, as gemm_bench reports the best of its runs: a run the machine slowed part-way says little of the code.
  {
    const auto tokens = bench_tokens(args.prompt, c.vocab_size, 1);
    nlohmann::ordered_json best;
    std::unique_ptr<TraceRecorder> best_trace;
    double best_s = 0;
    for (int run = 1; run <= args.prefill_runs; ++run) {
      const MachineLimits limits = measure_machine("prefill run " + std::to_string(run));
      if (run == 1) {
        // An untimed warm-up prompt of the same length (other tokens), after the machine line (whose triad would
        // flush what it leaves in the caches): the weights are touched once and the activation buffers of this
        // size are in the buffer cache, so the timed calls measure the steady state of a server rather than
        // first-touch page faults (which cost ~1 s on a v3 layer in a VM).
        auto warm = engine.create_sequence();
        engine.forward({EngineInput::last(warm.get(), bench_tokens(args.prompt, c.vocab_size, 99))});
      }
      auto seq = engine.create_sequence();
      auto trace = std::make_unique<TraceRecorder>(0, CommClock::now());
      if (!args.trace.empty()) engine.executor().set_trace(trace.get());
      const GemmCounters g0 = gemm_counters();
      const AttentionCounters a0 = attention_counters();
      const auto t0 = std::chrono::steady_clock::now();
      engine.forward({EngineInput::last(seq.get(), tokens)});
      const double s = seconds_since(t0);
      const GemmCounters g1 = gemm_counters();
      const AttentionCounters a1 = attention_counters();
      engine.executor().set_trace(nullptr);
      if (run > 1 && s >= best_s) continue;
      const double flops = projection_flops_per_token(c, /*include_lm_head=*/false) * double(args.prompt);
      nlohmann::ordered_json j = common;
      j["case"] = "prefill";
      j["tokens"] = args.prompt;
      j["run"] = run;
      j["runs"] = args.prefill_runs;
      j["seconds"] = s;
      j["tokens_per_s"] = double(args.prompt) / s;
      j["projection_gflops"] = flops / s / 1e9;
      j["fraction_of_fma_peak"] = flops / s / 1e9 / limits.fma_peak_gflops;
      // The GEMM share: the FLOPs the GEMM calls performed over the time spent inside them.
      const double gemm_s = g1.seconds - g0.seconds, gemm_flops = g1.flops - g0.flops;
      j["gemm_seconds"] = gemm_s;
      j["gemm_share_of_time"] = gemm_s / s;
      j["gemm_gflops"] = gemm_flops / gemm_s / 1e9;
      j["gemm_fraction_of_fma_peak"] = gemm_flops / gemm_s / 1e9 / limits.fma_peak_gflops;
      // The attention cores alone (kernels/attention.h counters): their share of the time, and their FLOPs (which
      // grow with the context) over their own time against the FMA peak.
      const double attn_s = a1.seconds - a0.seconds, attn_flops = a1.flops - a0.flops;
      j["attention_seconds"] = attn_s;
      j["attention_share_of_time"] = attn_s / s;
      j["attention_seconds_per_token"] = attn_s / double(args.prompt);
      j["attention_gflops"] = attn_s > 0 ? attn_flops / attn_s / 1e9 : 0.0;
      j["attention_fraction_of_fma_peak"] = attn_s > 0 ? attn_flops / attn_s / 1e9 / limits.fma_peak_gflops : 0.0;
      best = std::move(j);
      best_s = s;
      best_trace = std::move(trace);
    }
    print_line(best);
    if (!args.trace.empty()) {
      SingleRankCommunicator one;
      write_chrome_trace(one, *best_trace, args.trace);
    }
  }

  // Decode at each batch size: B sequences with a short prompt each, then steps of one token per sequence.
  for (int64_t batch : args.batches) {
    std::vector<std::unique_ptr<EngineSequence>> seqs;
    std::vector<EngineInput> prefill;
    for (int64_t b = 0; b < batch; ++b) {
      seqs.push_back(engine.create_sequence());
      prefill.push_back(EngineInput::last(seqs.back().get(), bench_tokens(32, c.vocab_size, 100 + uint64_t(b))));
    }
    engine.forward(prefill);
    std::vector<int32_t> next(static_cast<size_t>(batch));
    for (int64_t b = 0; b < batch; ++b) next[size_t(b)] = bench_tokens(1, c.vocab_size, 200 + uint64_t(b))[0];
    const MachineLimits limits = measure_machine("decode batch " + std::to_string(batch));
    // One untimed step, then the timed ones.
    double s = 0, gemm_s = 0;
    for (int64_t step = -1; step < args.decode_steps; ++step) {
      std::vector<EngineInput> in;
      for (int64_t b = 0; b < batch; ++b) in.push_back(EngineInput::last(seqs[size_t(b)].get(), {next[size_t(b)]}));
      const double g0 = gemm_counters().seconds;
      const auto t0 = std::chrono::steady_clock::now();
      const Tensor logits = engine.forward(in);
      if (step >= 0) s += seconds_since(t0), gemm_s += gemm_counters().seconds - g0;
      // Greedy next tokens keep the routing data-dependent, as in real decoding.
      for (int64_t b = 0; b < batch; ++b) {
        const float* row = logits.data<float>() + b * c.vocab_size;
        next[size_t(b)] = int32_t(std::max_element(row, row + c.vocab_size) - row);
      }
    }
    const double steps_per_s = double(args.decode_steps) / s;
    const double bytes = decode_weight_bytes_per_step(c, c.fp8, batch);
    nlohmann::ordered_json j = common;
    j["case"] = "decode";
    j["batch"] = batch;
    j["steps"] = args.decode_steps;
    j["seconds"] = s;
    j["tokens_per_s"] = steps_per_s * double(batch);
    j["weight_bytes_per_step"] = bytes;
    j["achieved_gbps"] = bytes * steps_per_s / 1e9;
    j["fraction_of_bandwidth_roofline"] = bytes * steps_per_s / 1e9 / limits.stream_triad_gbps;
    j["gemm_share_of_time"] = gemm_s / s;
    j["file_pmd_mapped_bytes"] = file_pmd_mapped_bytes();
    print_line(j);
  }

  if (args.speculative == "mtp") bench_speculative(args, dir, engine, common, measure_machine);
  if (!args.serving.concurrency.empty()) {
    measure_machine("serving");
    ServingBenchArgs serving = args.serving;
    serving.draft_tokens = args.speculative == "mtp" ? args.draft_tokens : 0;
    serving.rounds = args.speculative_rounds;
    bench_serving(serving, dir, engine, common, print_line);
  }
}

CommandRegistration registration{
    {"bench", "Prefill and decode speed of a checkpoint as fractions of this machine's bandwidth and FMA peak",
     [](CLI::App& sub) {
       auto args = std::make_shared<BenchArgs>();
       sub.add_option("dir", args->engine.model_dir, "Model folder (the same as -m)");
       add_engine_options(sub, args->engine);
       sub.add_option("--prompt", args->prompt, "Prefill prompt length in tokens")
           ->check(CLI::Range(int64_t(1), int64_t(1) << 20))
           ->capture_default_str();
       sub.add_option("--forward-chunk", args->forward_chunk,
                      "Positions per engine step: a longer prompt prefills in consecutive steps of this many, as "
                      "every command runs it (0 = the whole prompt in one step; default: the engine's, " +
                          std::to_string(ExecutorOptions{}.forward_chunk_tokens) + ")")
           ->check(CLI::Range(int64_t(0), int64_t(1) << 20));
       sub.add_option("--prefill-runs", args->prefill_runs, "Timed prefill runs; the fastest is reported")
           ->check(CLI::Range(1, 100))
           ->capture_default_str();
       sub.add_option("--decode-steps", args->decode_steps, "Timed decode steps per batch size")
           ->check(CLI::Range(int64_t(1), int64_t(1) << 20))
           ->capture_default_str();
       sub.add_option("--batch", args->batches, "Decode batch sizes, comma separated")
           ->delimiter(',')
           ->check(CLI::Range(int64_t(1), int64_t(4096)))
           ->capture_default_str();
       sub.add_option("--trace", args->trace, "Write the prefill's compute/communication spans as Chrome-trace JSON");
       sub.add_option("--speculative", args->speculative,
                      "mtp: also time greedy generation with MTP speculative decoding against the plain loop, "
                      "alternated (needs tokenizer.json in the model folder)")
           ->check(CLI::IsMember({"off", "mtp"}))
           ->capture_default_str();
       sub.add_option("--draft-tokens", args->draft_tokens, "Draft tokens per step with --speculative mtp")
           ->check(CLI::Range(1, 16))
           ->capture_default_str();
       sub.add_option("--concurrency", args->serving.concurrency,
                      "Also run the batch scheduler with C requests at once, for each C (comma separated): output "
                      "tok/s, time to first token and per output token (p50, p99), and a prefix-cache case "
                      "(needs tokenizer.json)")
           ->delimiter(',')
           ->check(CLI::Range(int64_t(1), int64_t(1024)));
       sub.add_option("--serving-prompt", args->serving.prompt, "Prompt tokens per request with --concurrency")
           ->check(CLI::Range(int64_t(2), int64_t(1) << 20))
           ->capture_default_str();
       sub.add_option("--serving-tokens", args->serving.decode_steps,
                      "New tokens per request with --concurrency (greedy, end of sequence ignored)")
           ->check(CLI::Range(int64_t(1), int64_t(1) << 20))
           ->capture_default_str();
       sub.add_option("--max-batch-tokens", args->serving.max_batch_tokens,
                      "Token budget of one scheduler step with --concurrency (at least the concurrency)")
           ->check(CLI::Range(int64_t(1), int64_t(1) << 20))
           ->capture_default_str();
       sub.add_option("--shared-prefix", args->serving.shared_prefix,
                      "Fraction of each --concurrency prompt common to all requests")
           ->check(CLI::Range(0.0, 1.0))
           ->capture_default_str();
       sub.add_option("--speculative-rounds", args->speculative_rounds,
                      "Timed plain / speculative generation pairs with --speculative mtp (per concurrency with "
                      "--concurrency)")
           ->check(CLI::Range(1, 1000))
           ->capture_default_str();
       sub.callback([args] { run_bench(*args); });
     }}};

}  // namespace
}  // namespace deepmoe::tools
