// `deepmoe bench --concurrency 1,8,32`: the continuous-batching scheduler (runtime/batch_scheduler.h) under a
// synthetic workload, one JSON line per concurrency C: C requests submitted at once, each a prompt of
// --serving-prompt tokens whose first --shared-prefix fraction is common to all (so the prefix cache serves it
// after the first), greedy, --decode-steps new tokens each (EOS ignored). Reports output tok/s over the wall time,
// its ratio to the C = first value's, and per request time to first token and time per output token (p50, p99).
// Then a "prefix" line: time to first token of a request with a 1,000-token prompt, and of a second request that
// shares those 1,000 tokens and adds 16 (the prefix cache's effect).
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
};

// Prints the lines through `print` (each starts from `common`).
void bench_serving(const ServingBenchArgs& args, const std::string& dir, Engine& engine,
                   const nlohmann::ordered_json& common, const std::function<void(const nlohmann::ordered_json&)>& print);

}  // namespace deepmoe::tools
