// Random checkpoints in exactly the Hugging Face layout of DeepSeek-V3 / V2 models (DESIGN.md §5): config.json,
// model.safetensors (or model.safetensors.index.json + shards), tokenizer files. Tests and benchmarks need no
// download: `tiny` is the unit-test workhorse; real-shape presets with fewer layers feed the benchmarks.
//
// Written streaming: each shard's header is computed from the config first, then tensors are generated panel
// by panel (128 rows, one FP8 block row) and written, so peak memory stays a few tens of MB for any size.
// Values are a pure function of (seed, tensor name, element index), so output is identical for any thread count.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "checkpoint/checkpoint_layout.h"
#include "model/config.h"

namespace deepmoe {

class ThreadPool;

struct GeneratorOptions {
  std::string preset = "tiny";  // tiny | tiny-v2 | v2-lite | moonlight | v3
  int64_t layers = -1;          // num_hidden_layers; -1 = the preset's
  int64_t dense_layers = -1;    // first_k_dense_replace; -1 = the preset's, capped at `layers`
  // n_routed_experts per MoE layer; -1 = the preset's. Fewer experts keep the bytes a decoded token reads (its
  // num_experts_per_tok experts per layer) but shrink the file: deep shapes fit a small machine.
  int64_t experts = -1;
  bool fp8 = true;              // F8_E4M3 + weight_scale_inv projections, else BF16 everywhere
  int mtp = -1;                 // MTP modules: -1 = the preset's default, 0 = none, 1 = one (V3 architecture only)
  uint64_t seed = 0;
  uint64_t max_shard_bytes = uint64_t(4) << 30;  // more tensor bytes than this → index.json + shards
  std::string tokenizer_dir;                     // tokenizer.json + tokenizer_config.json to copy; "" = none
  // Called on the calling thread after each tensor is written: tensor bytes written so far and in all.
  std::function<void(uint64_t written_bytes, uint64_t total_bytes)> progress;
};

std::vector<std::string> checkpoint_preset_names();
// The preset's config (V3 / V2-Lite / Moonlight dimensions; every preset keeps the DeepSeek-V3 tokenizer's
// vocab_size 129280). Error naming the preset if unknown.
ModelConfig checkpoint_preset(const std::string& preset);
// The preset with the options' layer counts, MTP and dtype applied and validated (Error on bad values).
ModelConfig generator_config(const GeneratorOptions& options);

struct GeneratedCheckpoint {
  ModelConfig config;
  std::vector<std::string> files;  // written, relative to the output folder
  uint64_t tensor_bytes = 0;       // sum of tensor data (the index's metadata.total_size)
  int64_t tensors = 0;
};

// Writes the checkpoint into out_dir (created if missing; stale model*.safetensors files and the index there are
// removed first). Errors name the file that could not be written.
GeneratedCheckpoint generate_checkpoint(const GeneratorOptions& options, const std::string& out_dir,
                                        ThreadPool* pool);

// The unquantized values the generator draws for rows [row_begin, row_end) of `spec` (rows of dimension 0; a 1-D
// tensor is one row), before BF16 rounding or FP8 quantization. Not defined for ScaleInv tensors (they come out
// of quantization). Exposed so tests can check dequantized weights against what was drawn.
void generated_values(const TensorSpec& spec, uint64_t seed, int64_t row_begin, int64_t row_end, float* out);

}  // namespace deepmoe
