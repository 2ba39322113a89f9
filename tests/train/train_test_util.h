// A tiny DeepSeek-V3 config that exercises every path of the trainer (q LoRA, YaRN, a dense layer then MoE
// with groups, shared expert, one MTP module) at sizes where FP64 finite differences are cheap.
#pragma once

#include "model/config.h"

namespace deepmoe {

inline ModelConfig tiny_train_config() {
  ModelConfig c;
  c.arch = ModelArch::DeepseekV3;
  c.vocab_size = 37;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.moe_intermediate_size = 8;
  c.num_hidden_layers = 2;
  c.num_nextn_predict_layers = 1;
  c.num_attention_heads = 2;
  c.q_lora_rank = 12;
  c.kv_lora_rank = 8;
  c.qk_nope_head_dim = 4;
  c.qk_rope_head_dim = 4;
  c.v_head_dim = 6;
  c.n_routed_experts = 8;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 2;
  c.n_group = 4;
  c.topk_group = 2;
  c.first_k_dense_replace = 1;
  c.max_position_embeddings = 64;
  c.bos_token_id = 0;
  c.eos_token_id = 1;
  c.scoring_func = "sigmoid";
  c.topk_method = "noaux_tc";
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 2.5;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 10000;
  c.rope_scaling.yarn = true;
  c.rope_scaling.factor = 4;
  c.rope_scaling.original_max_position_embeddings = 16;
  c.rope_scaling.mscale = 1;
  c.rope_scaling.mscale_all_dim = 1;
  return c;
}

}  // namespace deepmoe
