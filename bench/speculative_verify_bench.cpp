// The cost of speculative decoding's verification step against a plain decode step, at C requests and K drafts:
// one forward of C entries of K + 1 positions (logits and hidden states at each, as the MTP adapter asks) against
// one forward of C entries of one position, on the same cached 32-token contexts, rolled back after each and
// alternated pair by pair (the order swapped every other pair). Only the engine is loaded — no tokenizer, no
// machine probe, no serving workload — so it runs on checkpoints too large for `deepmoe bench --concurrency` on a
// small machine. `deepmoe bench … --concurrency … --speculative mtp` reports the same ratio
// (verify_over_decode_forward) beside the serving figures.
//
//   speculative_verify_bench MODEL_DIR [pairs=10] [threads=2]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "model/config.h"
#include "runtime/engine.h"

using namespace deepmoe;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL_DIR [pairs=10] [threads=2]\n", argv[0]);
    return 2;
  }
  const int pairs = argc > 2 ? std::atoi(argv[2]) : 10;
  ExecutorOptions options;
  options.threads = argc > 3 ? std::atoi(argv[3]) : 2;
  if (pairs < 1 || options.threads < 1) {
    std::fprintf(stderr, "pairs and threads must be at least 1\n");
    return 2;
  }
  auto engine = Engine::open(argv[1], options);
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
