// `deepmoe bench --concurrency 1,8,32`: the continuous-batching scheduler (runtime/batch_scheduler.h) under a
// synthetic workload, one JSON line per concurrency C: C requests submitted at once, each a prompt of
// --serving-prompt tokens whose first --shared-prefix fraction is common to all (so the prefix cache serves it
// after the first), greedy, --decode-steps new tokens each (EOS ignored). Reports output tok/s over the wall time,
// its ratio to the C = first value's, and per request time to first token and time per output token (p50, p99).
// Then a "prefix" line: time to first token of a request with a 1,000-token prompt, and of a second request that
// shares those 1,000 tokens and adds 16 (the prefix cache's effect).
//
// With draft_tokens K > 0 (`--speculative mtp`), per concurrency C also a "serving_speculative" line: the same
// workload with and without MTP speculative decoding in the scheduler, alternated over `rounds` timed rounds (after
// an untimed one; fresh prompts each round, the same for both; the prefix cache emptied before each run, so neither
// reuses the other's prompts): draft acceptance rate, accepted drafts per verification step, output tok/s and time
// per output token of both and their ratios (throughput and decode speedup), whether the outputs were identical;
// and one step's verification forward (C entries of K + 1 positions, logits and hidden states at each) over a plain
// decode forward (C entries of one position), alternated (the only part measured without an MTP layer).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/engine.h"

namespace deepmoe::tools {

struct ServingBenchArgs {
  std::vector<int64_t> concurrency;  // empty: no serving case
  int64_t prompt = 128;
  double shared_prefix = 0.5;
  int64_t decode_steps = 16;
  int64_t max_batch_tokens = 512;
  int draft_tokens = 0;  // speculative decoding with the MTP module (0: off)
  int rounds = 3;        // timed plain / speculative pairs
};

// Prints the lines through `print` (each starts from `common`).
void bench_serving(const ServingBenchArgs& args, const std::string& dir, Engine& engine,
                   const nlohmann::ordered_json& common, const std::function<void(const nlohmann::ordered_json&)>& print);

}  // namespace deepmoe::tools
