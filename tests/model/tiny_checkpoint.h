// Tiny random DeepSeek-V3 / V2 checkpoints written in the Hugging Face layout for the model tests: the tensor list
// is written out here from reference §1.8/§1.9 (independently of the generator, so the two check each other),
// values come from a seeded generator scaled so activations stay O(1), FP8 projections are quantized with
// kernels/quantize.h (128×128 blocks + weight_scale_inv).
#pragma once

#include <cstdint>
#include <string>

#include "model/config.h"

namespace deepmoe::testing_util {

// V3 structure at toy width: q LoRA, sigmoid gate with correction bias, 4 groups / keep 2, 1 dense + 2 MoE layers,
// one MTP layer, YaRN; kv_a_proj has N = 144 (a partial 128-row scale block), vocab 512.
ModelConfig tiny_v3_config();
// V2 structure: plain q_proj, softmax gate, topk_method as given (greedy | group_limited_greedy), 2 shared
// experts, no MTP; V2-Lite's norm_topk_prob false, routed_scaling_factor scale.
ModelConfig tiny_v2_config(const std::string& topk_method, double routed_scaling_factor);

enum class WeightFormat {
  Fp8,              // projections F8_E4M3 + weight_scale_inv (the official layout)
  Fp8DequantizedF32,  // the same FP8 values dequantized exactly and stored as F32 (no scales)
  Bf16,             // projections BF16
};

// Writes dir/config.json and dir/model.safetensors (dir is created). The same seed gives the same underlying
// values for every format. Returns the model.safetensors file size in bytes.
uint64_t write_tiny_checkpoint(const ModelConfig& cfg, const std::string& dir, WeightFormat format, uint64_t seed);

// A fresh, empty temporary folder for one test, removed when the process exits.
std::string temp_dir(const std::string& name);

}  // namespace deepmoe::testing_util
