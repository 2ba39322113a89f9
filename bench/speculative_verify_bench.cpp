// The cost of speculative decoding's verification step against a plain decode step, at C requests and K drafts:
// one forward of C entries of K + 1 positions (logits and hidden states at each, as the MTP adapter asks) against
// one forward of C entries of one position, on the same cached 32-token contexts, rolled back after each and
// alternated pair by pair (the order swapped every other pair). Only the engine is loaded — no tokenizer, no
// machine probe, no serving workload — so it runs on checkpoints too large for `deepmoe bench --concurrency` on a
// small machine. `deepmoe bench … --concurrency … --speculative mtp` reports the same ratio
// (verify_over_decode_forward) beside the serving figures.
//
// With `stages`: where one request's forwards spend their time, per stage of the executor's trace spans, for a
// plain decode forward (1 position), verification forwards of K + 1 = 2, 3, 4 positions (logits and hidden states
// at each) and, with an MTP layer, one draft forward (the MTP module on one position, logits and output state),
// on a cached 32-token context, rolled back after each; the kinds alternate `pairs` times. One JSON line per kind:
// microseconds per forward of wall time and of process CPU time (without the trace), and per stage (wall, from
// forwards run with the trace; "rest" is the untraced wall time no span covers: input checks, KV bookkeeping,
// MoE layer setup, residual adds, copies of the logits and hidden rows).
//
//   speculative_verify_bench MODEL_DIR [pairs=10] [threads=2] [stages]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "parallel/chrome_trace.h"
#include "runtime/engine.h"
#include "runtime/executor.h"

using namespace deepmoe;
using Clock = std::chrono::steady_clock;

namespace {

double process_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// The `stages` mode (see the top of the file).
void stage_breakdown(Engine& engine, int pairs) {
  const ModelConfig& c = engine.config();
  const int64_t context = 32, H = c.hidden_size;
  std::vector<int32_t> prompt(static_cast<size_t>(context));
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = int32_t(3 + (i * 37) % size_t(c.vocab_size - 3));
  auto seq = engine.create_sequence();
  EngineInput prefill = EngineInput::last(seq.get(), prompt);
  prefill.hidden_of_all_tokens = engine.has_mtp();
  Tensor prompt_hidden;
  engine.forward({prefill}, &prompt_hidden);
  if (engine.has_mtp()) {  // MTP position i sees the main state at i and token i + 1
    EngineMtpInput in;
    in.sequence = seq.get();
    in.hidden = Tensor::zeros(DType::F32, {context - 1, H});
    std::copy_n(prompt_hidden.data<const float>(), (context - 1) * H, in.hidden.data<float>());
    in.next_tokens.assign(prompt.begin() + 1, prompt.end());
    in.logit_indices = {context - 2};
    engine.forward_mtp({in});
  }
  struct Kind {
    std::string name;
    int positions;
    double wall = 0, cpu = 0;
    TraceRecorder trace{0, CommClock::now()};
  };
  std::vector<std::unique_ptr<Kind>> kinds;
  for (int n : {1, 2, 3, 4}) {
    kinds.push_back(std::make_unique<Kind>());
    kinds.back()->name = n == 1 ? "decode" : "verify";
    kinds.back()->positions = n;
  }
  if (engine.has_mtp()) {
    kinds.push_back(std::make_unique<Kind>());
    kinds.back()->name = "draft";
    kinds.back()->positions = 1;
  }
  const std::vector<int32_t> fed = {5, 17, 29, 41};
  // Each kind runs twice per pair: untimed under the trace (the stage split) and timed without it (the totals):
  // recording ~30 spans costs ~15% of a decode forward of the default model, which lands between the spans.
  for (int p = -1; p < pairs; ++p) {  // p = -1 warms up, untimed
    for (auto& k : kinds) {
      for (const bool traced : {true, false}) {
        engine.executor().set_trace(traced && p >= 0 ? &k->trace : nullptr);
        const auto t0 = Clock::now();
        const double c0 = process_cpu_seconds();
        if (k->name == "draft") {
          EngineMtpInput in;
          in.sequence = seq.get();
          in.hidden = Tensor::zeros(DType::F32, {1, H});
          std::copy_n(prompt_hidden.data<const float>() + (context - 1) * H, H, in.hidden.data<float>());
          in.next_tokens = {fed[0]};
          in.logit_indices = {0};
          Tensor out_hidden;
          engine.forward_mtp({in}, &out_hidden);
        } else if (k->positions == 1) {
          engine.forward({EngineInput::last(seq.get(), {fed[0]})});
        } else {
          EngineInput v = EngineInput::all(seq.get(), std::vector<int32_t>(fed.begin(), fed.begin() + k->positions));
          v.hidden_of_all_tokens = true;
          Tensor hidden;
          engine.forward({v}, &hidden);
        }
        if (p >= 0 && !traced)
          k->wall += std::chrono::duration<double>(Clock::now() - t0).count(), k->cpu += process_cpu_seconds() - c0;
        seq->main.truncate(context);
        seq->mtp.truncate(context - 1);
      }
    }
  }
  engine.executor().set_trace(nullptr);
  const double decode_cpu = kinds.front()->cpu;
  const char* stages[][2] = {{"embed", "embed"},
                             {"mtp_input", "mtp input"},
                             {"attention", "attention"},
                             {"dense_mlp", "mlp"},
                             {"moe_gate", "gate"},
                             {"moe_dispatch", "wait: dispatch"},
                             {"moe_routed_experts", "experts"},
                             {"moe_shared_expert", "shared"},
                             {"moe_combine", "wait: combine"},
                             {"lm_head", "lm_head"}};
  for (const auto& k : kinds) {
    const double per = 1e6 / double(pairs);
    std::printf("{\"forward\":\"%s\",\"positions\":%d,\"pairs\":%d,\"wall_us\":%.2f,\"cpu_us\":%.2f,"
                "\"cpu_over_decode\":%.3f",
                k->name.c_str(), k->positions, pairs, k->wall * per, k->cpu * per, k->cpu / decode_cpu);
    double covered = 0;
    for (const auto& st : stages) {
      const double us = k->trace.total_us(TraceLane::Compute, st[1]) / double(pairs);
      covered += us;
      std::printf(",\"%s_us\":%.2f", st[0], us);
    }
    std::printf(",\"rest_us\":%.2f}\n", k->wall * per - covered);
  }
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL_DIR [pairs=10] [threads=2] [stages]\n", argv[0]);
    return 2;
  }
  const int pairs = argc > 2 ? std::atoi(argv[2]) : 10;
  ExecutorOptions options;
  options.threads = argc > 3 ? std::atoi(argv[3]) : 2;
  if (pairs < 1 || options.threads < 1) {
    std::fprintf(stderr, "pairs and threads must be at least 1\n");
    return 2;
  }
  if (argc > 4 && std::string(argv[4]) != "stages") {
    std::fprintf(stderr, "the fourth argument can only be \"stages\", got \"%s\"\n", argv[4]);
    return 2;
  }
  auto engine = Engine::open(argv[1], options);
  if (argc > 4) {
    stage_breakdown(*engine, pairs);
    return 0;
  }
  const int64_t vocab = engine->config().vocab_size, context = 32;
  uint64_t state = 1;
  auto token = [&] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return int32_t((state >> 33) % uint64_t(vocab - 3) + 3);
  };
  for (int requests : {1, 8}) {
    for (int drafts : {1, 3}) {
      std::vector<std::unique_ptr<EngineSequence>> seqs;
      std::vector<EngineInput> prefill;
      for (int i = 0; i < requests; ++i) {
        seqs.push_back(engine->create_sequence());
        std::vector<int32_t> t(static_cast<size_t>(context));
        for (auto& x : t) x = token();
        prefill.push_back(EngineInput::last(seqs.back().get(), t));
      }
      engine->forward(prefill);
      double verify_s = 0, decode_s = 0;
      for (int p = -1; p < pairs; ++p) {  // p = -1 warms up, untimed
        std::vector<EngineInput> verify, decode;
        for (int i = 0; i < requests; ++i) {
          std::vector<int32_t> fed(static_cast<size_t>(drafts + 1));
          for (auto& x : fed) x = token();
          EngineInput v = EngineInput::all(seqs[size_t(i)].get(), fed);
          v.hidden_of_all_tokens = true;
          verify.push_back(std::move(v));
          decode.push_back(EngineInput::last(seqs[size_t(i)].get(), {fed[0]}));
        }
        for (int k = 0; k < 2; ++k) {
          const bool verify_now = (k == 0) == (p % 2 == 0);
          Tensor hidden;
          const auto t0 = Clock::now();
          if (verify_now)
            engine->forward(verify, &hidden);
          else
            engine->forward(decode);
          const double s = std::chrono::duration<double>(Clock::now() - t0).count();
          if (p >= 0) (verify_now ? verify_s : decode_s) += s;
          for (auto& q : seqs) q->main.truncate(context);
        }
      }
      std::printf("{\"requests\":%d,\"draft_tokens\":%d,\"pairs\":%d,\"verify_forward_seconds\":%.4f,"
                  "\"decode_forward_seconds\":%.4f,\"verify_over_decode_forward\":%.3f}\n",
                  requests, drafts, pairs, verify_s / pairs, decode_s / pairs, verify_s / decode_s);
      std::fflush(stdout);
    }
  }
}
