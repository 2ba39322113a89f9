// What a model is, computed from its config alone (parameter counts, KV-cache bytes, weight bytes a decode step
// streams) and from its checkpoint's tensor list (bytes by dtype, which tensors are FP8). `deepmoe inspect` prints
// these; `deepmoe bench` uses the weight bytes for its bandwidth roofline.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace deepmoe {

struct ModelConfig;

struct ParameterCounts {
  // Main model (everything but the MTP modules).
  int64_t total = 0;
  // Parameters one token's forward multiplies with: everything except the routed experts, plus
  // num_experts_per_tok of them per MoE layer, and one row of the embedding table (a lookup, not a product).
  int64_t active_per_token = 0;
  int64_t embedding = 0, lm_head = 0, routed_experts = 0;
  // MTP modules, not counting their stored copies of the shared embedding and head (README_WEIGHTS.md).
  int64_t mtp_total = 0;
  // MTP per token: its block with top-k experts, eh_proj, norms, the shared head and one embedding row.
  int64_t mtp_active_per_token = 0;
};

ParameterCounts count_parameters(const ModelConfig& config);

struct KvCacheSize {
  int64_t absorbed_values_per_layer = 0;  // kv_lora_rank + qk_rope_head_dim (576 for V3)
  int64_t naive_values_per_layer = 0;     // heads · (qk_head_dim + v_head_dim) (40,960 for V3)
  int64_t layers = 0;                     // main layers (the MTP module keeps its own cache when it runs)
  uint64_t absorbed_f32_bytes_per_token() const { return uint64_t(absorbed_values_per_layer * layers) * 4; }
  uint64_t absorbed_bf16_bytes_per_token() const { return uint64_t(absorbed_values_per_layer * layers) * 2; }
  uint64_t naive_bf16_bytes_per_token() const { return uint64_t(naive_values_per_layer * layers) * 2; }
};

KvCacheSize kv_cache_size(const ModelConfig& config);

// Weight bytes (as stored: FP8 + scales, or BF16) one decode step of `batch` tokens reads from memory in the main
// model: all non-expert weights, lm_head, one embedding row per token, and the routed experts the batch selects —
// exactly num_experts_per_tok per MoE layer for one token, and E·(1 − (1 − k/E)^batch) expected distinct experts
// for a batch under uniform routing. The numerator of the bandwidth roofline (Speed).
double decode_weight_bytes_per_step(const ModelConfig& config, bool fp8, int64_t batch);

// FLOPs of the projections (GEMM share) for one token of prefill: 2 · active projection parameters (lm_head
// included, as a prefill that asks for every position's logits runs it on every row).
double projection_flops_per_token(const ModelConfig& config, bool include_lm_head);

// A checkpoint's stored tensors, described by the caller (e.g. from model/safetensors.h).
struct StoredTensor {
  std::string name;
  DType dtype = DType::F32;
  uint64_t nbytes = 0;
};

struct CheckpointSummary {
  std::map<std::string, uint64_t> bytes_by_dtype;   // dtype name → bytes
  std::map<std::string, int64_t> tensors_by_dtype;  // dtype name → count
  // Name patterns with layer and expert numbers folded to '*' → count, for the F8_E4M3 tensors.
  std::map<std::string, int64_t> fp8_patterns;
  uint64_t total_bytes = 0;
  // Compared with the layout the config implies (checkpoint/checkpoint_layout.h).
  std::vector<std::string> missing, unexpected;
};

CheckpointSummary summarize_checkpoint(const ModelConfig& config, const std::vector<StoredTensor>& tensors);

// "model.layers.12.mlp.experts.7.up_proj.weight" → "model.layers.*.mlp.experts.*.up_proj.weight".
std::string tensor_name_pattern(const std::string& name);

}  // namespace deepmoe
