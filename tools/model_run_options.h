// The options every model-running tool command shares (logits, perplexity, bench): --gemm, --threads,
// --kv-dtype, --attention, --redundant-experts, --micro-batches, turned into ModelOptions; and the default model
// folder when -m is not given.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "command.h"
#include "core/error.h"
#include "model/deepseek_model.h"

namespace deepmoe::tools {

struct ModelRunArgs {
  // w8a32 is the default: the more accurate mode. Which mode is faster here is not measured yet: compare
  // `deepmoe bench --gemm w8a8` and `--gemm w8a32`.
  std::string gemm = "w8a32";
  std::string kv_dtype = "f32";
  std::string attention = "absorbed";
  int threads = 0;
  int redundant_experts = 0;
  int micro_batches = 0;
  int rebalance_every = 0;

  void add_to(CLI::App& sub) {
    sub.add_option("--gemm", gemm,
                   "FP8 matrix-multiply mode: w8a32 (weights dequantized per block, FP32 activations; default, "
                   "the more accurate), w8a8 (activations quantized to FP8 in blocks of 128) or w8a16 (activations "
                   "rounded to BF16); w8a8 and w8a16 use the BF16 dot product where the CPU has AVX512_BF16")
        ->check(CLI::IsMember({"w8a8", "w8a16", "w8a32"}))
        ->capture_default_str();
    sub.add_option("--threads", threads, "Worker threads (0 = one per hardware thread)")
        ->check(CLI::NonNegativeNumber);
    sub.add_option("--kv-dtype", kv_dtype, "KV cache storage: f32 or bf16")
        ->check(CLI::IsMember({"f32", "bf16"}))
        ->capture_default_str();
    sub.add_option("--attention", attention,
                   "Attention form: absorbed (default; attends in the compressed latent space) or naive (expands "
                   "full per-head keys and values from it; the reference form)")
        ->check(CLI::IsMember({"absorbed", "naive"}))
        ->capture_default_str();
    add_expert_parallel_options(sub, redundant_experts, micro_batches, rebalance_every);
  }

  // Also used by commands with their own option structs (generate, chat).
  static void add_expert_parallel_options(CLI::App& sub, int& redundant_experts, int& micro_batches,
                                          int& rebalance_every) {
    sub.add_option("--redundant-experts", redundant_experts,
                   "Extra routed-expert replicas per MoE layer over all ranks; each rank hosts (experts + N) / ranks "
                   "slots")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    sub.add_option("--micro-batches", micro_batches,
                   "Two-micro-batch overlap of compute and all-to-all: 0 = when on more than one rank, 1 = off, "
                   "2 = always (results are identical)")
        ->check(CLI::Range(0, 2))
        ->capture_default_str();
    sub.add_option("--rebalance-every", rebalance_every,
                   "Re-place the experts with EPLB from the collected load every N forward calls, moving weights "
                   "between ranks at the batch boundary (0 = never)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
  }

  ModelOptions options() const {
    ModelOptions o;
    o.gemm = gemm == "w8a8" ? GemmMode::W8A8 : gemm == "w8a16" ? GemmMode::W8A16 : GemmMode::W8A32;
    o.kv_dtype = kv_dtype == "bf16" ? DType::BF16 : DType::F32;
    o.attention = attention == "naive" ? AttentionMode::Naive : AttentionMode::Absorbed;
    o.threads = threads;
    o.redundant_experts = redundant_experts;
    o.micro_batches = micro_batches;
    o.rebalance_every = rebalance_every;
    return o;
  }
};

// Runs `body` for the model folder `dir`: an empty `dir` becomes the default model (command.h), and an error about
// that folder then says how to create it, as generate's does.
template <class Body>
void with_default_model_hint(std::string& dir, Body&& body) {
  const bool defaulted = dir.empty();
  if (defaulted) dir = default_model_dir();
  try {
    body();
  } catch (const Error& e) {
    if (defaulted && e.context().file.rfind(dir, 0) == 0)
      throw Error(e.message() + " (the default model; run `make demo` to create it, or pass -m DIR)", e.context());
    throw;
  }
}

}  // namespace deepmoe::tools
