// A model's config.json (Hugging Face layout) for DeepseekV3ForCausalLM and DeepseekV2ForCausalLM, validated.
//
// Field names are exactly the HF ones (reference/deepseek_v3_system.md §1.1). Every count that later sizes an
// array or an allocation is bounded here (reliability.md §1 G5), and every field with a value the engine does
// not implement is rejected by name (DESIGN.md §8), so the model code may trust this struct.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/rope.h"

namespace deepmoe {

enum class ModelArch { DeepseekV3, DeepseekV2 };

// "DeepseekV3ForCausalLM" / "DeepseekV2ForCausalLM".
std::string_view model_arch_name(ModelArch arch);

// The rope_scaling block. Only YaRN exists in DeepSeek configs; yarn == false means rope_scaling was null/absent
// (plain RoPE, e.g. Moonlight).
struct RopeScaling {
  bool yarn = false;
  double factor = 1, beta_fast = 32, beta_slow = 1, mscale = 1, mscale_all_dim = 0;
  int64_t original_max_position_embeddings = 4096;
  bool operator==(const RopeScaling&) const = default;
};

struct ModelConfig {
  ModelArch arch = ModelArch::DeepseekV3;
  int64_t vocab_size = 0, hidden_size = 0, intermediate_size = 0, moe_intermediate_size = 0, num_hidden_layers = 0,
          num_nextn_predict_layers = 0,  // MTP layers after the main ones; 0 when absent
          num_attention_heads = 0,
          q_lora_rank = 0,  // 0 = none (null in V2-Lite / Moonlight): q comes from a plain q_proj
          kv_lora_rank = 0, qk_nope_head_dim = 0, qk_rope_head_dim = 0, v_head_dim = 0, n_routed_experts = 0,
          n_shared_experts = 0, num_experts_per_tok = 0,
          n_group = 1, topk_group = 1,  // 1 when absent or null
          first_k_dense_replace = 0, moe_layer_freq = 1, max_position_embeddings = 0,
          bos_token_id = -1, eos_token_id = -1;  // -1 when absent or null; eos is the first of eos_token_ids
  std::vector<int64_t> eos_token_ids;            // all of them when config.json gives a list
  std::string scoring_func = "sigmoid";          // sigmoid | softmax
  std::string topk_method = "noaux_tc";          // noaux_tc | greedy | group_limited_greedy
  bool norm_topk_prob = false;
  double routed_scaling_factor = 1, rms_norm_eps = 1e-6, rope_theta = 10000;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool fp8 = false;  // quantization_config present: fp8 e4m3 weights with weight_scale_inv blocks
  int64_t fp8_block_n = 128, fp8_block_k = 128;
  std::string fp8_scale_fmt;  // "" (plain fp32 scales) or "ue8m0" (V3.1: power-of-two activation scales)
  std::string torch_dtype;    // informational ("bfloat16"), "" when absent

  // Layer `layer` (0-based; the MTP layers follow at num_hidden_layers..) uses routed experts:
  // layer >= first_k_dense_replace && layer % moe_layer_freq == 0 (HF modeling_deepseek.py).
  bool is_moe_layer(int64_t layer) const;
  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  // topk_method == noaux_tc: the gate has e_score_correction_bias (reference §1.6).
  bool has_correction_bias() const { return topk_method == "noaux_tc"; }
  // Total layers in the checkpoint, MTP included.
  int64_t num_layers_with_mtp() const { return num_hidden_layers + num_nextn_predict_layers; }
  // qk_head_dim^-0.5, times mscale² with mscale = 0.1·mscale_all_dim·ln(factor) + 1 when YaRN is on and
  // mscale_all_dim != 0 (HF DeepseekV3Attention; 0.1352338 for V3, reference §1.4).
  double attention_softmax_scale() const;

  bool operator==(const ModelConfig&) const = default;
};

// Parses and validates config.json text. Errors are deepmoe::Error naming path_for_errors and the field.
ModelConfig parse_model_config(std::string_view json_text, const std::string& path_for_errors);
// Reads model_dir/config.json.
ModelConfig load_model_config(const std::string& model_dir);

// The RoPE / YaRN settings of the config (qk_rope_head_dim, rope_theta, rope_scaling), as kernels/rope.h takes them.
RopeParams rope_params(const ModelConfig& config);
// HF layout (what parse_model_config reads back to an equal config), for the checkpoint generator.
std::string model_config_to_json(const ModelConfig& config);

}  // namespace deepmoe
