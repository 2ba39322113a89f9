#include "engine_options.h"

#include <CLI/CLI.hpp>

#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <optional>
#include <thread>

#include "command.h"
#include "core/error.h"
#include "core/warning.h"
#include "kernels/gemm.h"
#include "progress.h"

namespace deepmoe::tools {
namespace {

// Ranks of this launch on this machine (Open MPI and MPICH say so in the environment).
int local_ranks(const Communicator& comm) {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "MV2_COMM_WORLD_LOCAL_SIZE"})
    if (const char* v = std::getenv(name)) {
      const int n = std::atoi(v);
      if (n > 0) return n;
    }
  return comm.size();
}

}  // namespace

void add_engine_options(CLI::App& app, EngineArgs& args) {
  app.add_option("-m,--model", args.model_dir,
                 "Model folder (config.json, *.safetensors, tokenizer.json); default: $DEEPMOE_MODEL or the bundled "
                 "model made by `make demo`");
  app.add_option("-t,--threads", args.threads,
                 "Worker threads per process (0 = one per hardware thread, shared among the ranks of an mpirun "
                 "launch on this machine)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--gemm", args.gemm,
                 "How FP8 weights multiply activations: w8a32 (weights widened per block, FP32 activations; the "
                 "same bits on every CPU), w8a8 (activations quantized to FP8 in 1x128 tiles) or w8a16 "
                 "(activations rounded to BF16); w8a8 and w8a16 use the BF16 dot product where the CPU has "
                 "AVX512_BF16. auto: w8a16 where every rank has the BF16 dot product, else w8a32")
      ->check(CLI::IsMember({"auto", "w8a32", "w8a8", "w8a16"}))
      ->capture_default_str();
  app.add_option("--kv-dtype", args.kv_dtype, "KV cache storage: f32 or bf16")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  app.add_option("--attention", args.attention,
                 "Attention form: absorbed (attends over the compressed latent cache) or naive (expands keys and "
                 "values per head); both give the same result to rounding")
      ->check(CLI::IsMember({"absorbed", "naive"}))
      ->capture_default_str();
  app.add_option("--redundant-experts", args.redundant_experts,
                 "Extra routed-expert replicas per MoE layer over all ranks; each rank hosts (experts + N) / ranks "
                 "expert slots")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--micro-batches", args.micro_batches,
                 "Overlap of compute with the expert all-to-all by splitting a step in two micro-batches: 0 = when "
                 "on more than one rank and a rank has 128 or more tokens in the step, 1 = off, 2 = always "
                 "(results are identical)")
      ->check(CLI::Range(0, 2))
      ->capture_default_str();
  app.add_option("--dp-attention", args.dp_attention,
                 "Under mpirun, spread the requests over the ranks, each rank keeping the KV cache and running the "
                 "attention of its own requests (on), or keep them all on rank 0 (off); the experts are spread "
                 "either way, and the results are identical")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
  app.add_option("--rebalance-every", args.rebalance_every,
                 "Re-place the experts over the ranks from the measured load every N steps, moving weights between "
                 "ranks between steps (0 = never)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  add_quiet_option(app);
}

GemmMode resolve_gemm_mode(const std::string& name, Communicator& comm) {
  if (name == "w8a8") return GemmMode::W8A8;
  if (name == "w8a16") return GemmMode::W8A16;
  if (name != "auto") return GemmMode::W8A32;
  // Every rank must run the same mode, or an expert's results would depend on which rank hosts it: w8a16 only
  // when all of them have the BF16 dot product (a collective, like the load that follows).
  const int64_t here = gemm_uses_bf16_dot(GemmMode::W8A16, DType::F8_E4M3) ? 1 : 0;
  const std::vector<int64_t> all = comm.size() > 1 ? comm.all_gather({&here, 1}) : std::vector<int64_t>{here};
  const bool everywhere = std::all_of(all.begin(), all.end(), [](int64_t v) { return v == 1; });
  return everywhere ? GemmMode::W8A16 : GemmMode::W8A32;
}

ExecutorOptions executor_options(const EngineArgs& args, Communicator& comm) {
  ExecutorOptions o;
  o.gemm = resolve_gemm_mode(args.gemm, comm);
  o.kv_dtype = args.kv_dtype == "bf16" ? DType::BF16 : DType::F32;
  o.attention = args.attention == "naive" ? AttentionMode::Naive : AttentionMode::Absorbed;
  const int hardware = std::max(1, int(std::thread::hardware_concurrency()));
  o.threads = args.threads;
  if (o.threads == 0 && comm.size() > 1) o.threads = std::max(1, hardware / local_ranks(comm));
  if (o.threads > hardware) {
    if (comm.rank() == 0)
      warn_once("threads", "--threads " + std::to_string(args.threads) + " is more than the " +
                               std::to_string(hardware) + " hardware threads; using " + std::to_string(hardware));
    o.threads = hardware;
  }
  o.redundant_experts = args.redundant_experts;
  o.micro_batches = args.micro_batches;
  o.data_parallel_attention = args.dp_attention == "on";
  o.rebalance_every = args.rebalance_every;
  return o;
}

EngineJob open_engine_job(const EngineArgs& args, bool with_tokenizer,
                          const std::function<void(ExecutorOptions&)>& adjust,
                          const std::function<void()>& before_load) {
  EngineJob job;
  job.comm = make_world_communicator();
  // Rank 0 speaks for the job: the other ranks load the same files and would only repeat its warnings.
  if (!job.is_leader()) set_warning_handler([](std::string_view) {});
  ExecutorOptions options = executor_options(args, *job.comm);
  if (adjust) adjust(options);
  const std::string dir = args.model_dir.empty() ? default_model_dir() : args.model_dir;
  std::optional<LoadProgressBar> bar;  // rank 0's terminal only
  if (job.is_leader()) bar.emplace(dir);
  try {
    if (before_load && job.is_leader()) before_load();
    auto progress = [&](std::string_view stage, double f) {
      if (bar) bar->stage(stage, f);
    };
    job.model = load_model_dir(dir, options, *job.comm, progress, with_tokenizer);
    if (bar) bar->finish();
  } catch (const Error& e) {
    if (bar) bar->finish();
    if (args.model_dir.empty() && e.context().file.rfind(dir, 0) == 0)
      throw Error(e.message() + " (the default model; run `make demo` to create it, or pass -m DIR)", e.context());
    throw;
  }
  return job;
}

void run_engine_job(EngineJob& job, const std::function<void()>& leader_body) {
  try {
    if (job.is_leader()) {
      leader_body();
      job.engine().finish();
    } else {
      // mpirun forwards Ctrl-C and SIGTERM to every rank; the leader decides what they mean (stop a chat reply,
      // drain the server) and releases the followers when it ends. A leader that dies takes the job with it.
      std::signal(SIGINT, SIG_IGN);
      std::signal(SIGTERM, SIG_IGN);
      job.engine().follow();
    }
  } catch (const std::exception& e) {
    // The other ranks may be waiting for the next step or inside one: end the whole job with the message.
    if (job.comm->size() > 1) job.comm->abort(e.what());
    throw;
  }
}

}  // namespace deepmoe::tools
