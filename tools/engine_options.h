// What every command that runs a model shares (generate, chat, serve, perplexity, logits, bench): one option set
// (-m, -t, --gemm, --kv-dtype, --attention, --redundant-experts, --micro-batches, --rebalance-every,
// --dp-attention), parsed once, and one way to run as a job — a single process, or every rank of an `mpirun` launch with rank 0 reading the
// input and writing the output while the other ranks follow its steps (runtime/engine.h).
#pragma once

#include <cstdio>
#include <functional>
#include <memory>
#include <string>

#include "parallel/communicator.h"
#include "runtime/engine.h"
#include "runtime/loaded_model.h"
#include "user_terminal.h"

namespace CLI {
class App;
}

namespace deepmoe::tools {

struct EngineArgs {
  std::string model_dir;  // empty: default_model_dir()
  int threads = 0;
  // auto: w8a16 where every rank's CPU has the BF16 dot product (as accurate as w8a32 on FP8 weights and up to
  // twice as fast), w8a32 elsewhere; docs/BENCHMARKS.md has the figures behind that choice.
  std::string gemm = "auto";
  std::string kv_dtype = "f32";
  std::string attention = "absorbed";
  int redundant_experts = 0;
  int micro_batches = 0;
  int rebalance_every = 0;
  std::string dp_attention = "on";
};

void add_engine_options(CLI::App& app, EngineArgs& args);

// The options as the engine takes them. Threads: 0 means one per hardware thread, shared among the ranks of a
// launch on this machine; more than the hardware has is capped with a warning (oversubscribed threads spin
// against each other). A collective: every rank calls it.
ExecutorOptions executor_options(const EngineArgs& args, Communicator& comm);

// The GEMM mode a --gemm value names; "auto" is w8a16 where every rank of the launch has the BF16 dot product
// (kernels/gemm.h gemm_uses_bf16_dot), w8a32 otherwise. A collective for "auto" on more than one rank.
GemmMode resolve_gemm_mode(const std::string& name, Communicator& comm);

// One run of a model command over the ranks of this launch.
struct EngineJob {
  std::unique_ptr<Communicator> comm;
  LoadedModel model;  // the engine; the tokenizer and the generation view unless opened without them

  bool is_leader() const { return comm->rank() == 0; }
  Engine& engine() { return *model.engine; }
};

// Loads the model folder on every rank (the default model when -m is not given; a progress bar on the leader's
// terminal). `adjust` may change the options first (e.g. not loading the MTP layer); `before_load` runs on the
// leader only, before the load (the server listens first). Without the tokenizer, the folder needs only
// config.json and the weights.
EngineJob open_engine_job(const EngineArgs& args, bool with_tokenizer,
                          const std::function<void(ExecutorOptions&)>& adjust = {},
                          const std::function<void()>& before_load = {});

// Runs `leader_body` on rank 0 and Engine::follow() on the other ranks, then releases the followers. An error
// in a job of several ranks ends every rank with a non-zero status and the message.
void run_engine_job(EngineJob& job, const std::function<void()>& leader_body);

}  // namespace deepmoe::tools
