// Parameter counts and KV bytes from config alone, checked against DeepSeek's published numbers for the
// 61-layer V3 config (README.md / README_WEIGHTS.md; reference deepseek_v3_system.md §1.5, §1.9).
#include <gtest/gtest.h>

#include <cmath>

#include "checkpoint/checkpoint_generator.h"
#include "model/config.h"
#include "checkpoint/model_summary.h"

namespace deepmoe {
namespace {

// DeepSeek-V3's config.json fields (reference §1.1, HF names), written out here rather than taken from the
// generator's preset, so the counts are checked against the published config.
const char* kDeepseekV3Config = R"({
  "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
  "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048,
  "num_hidden_layers": 61, "num_nextn_predict_layers": 1, "num_attention_heads": 128, "num_key_value_heads": 128,
  "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
  "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8, "n_group": 8, "topk_group": 4,
  "first_k_dense_replace": 3, "moe_layer_freq": 1, "scoring_func": "sigmoid", "topk_method": "noaux_tc",
  "norm_topk_prob": true, "routed_scaling_factor": 2.5, "rms_norm_eps": 1e-6, "rope_theta": 10000,
  "rope_scaling": {"type": "yarn", "factor": 40, "beta_fast": 32, "beta_slow": 1, "mscale": 1.0,
                   "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096},
  "max_position_embeddings": 163840, "bos_token_id": 0, "eos_token_id": 1, "tie_word_embeddings": false,
  "hidden_act": "silu", "torch_dtype": "bfloat16",
  "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                          "weight_block_size": [128, 128]}
})";

ModelConfig v3_config() { return parse_model_config(kDeepseekV3Config, "v3 config.json"); }

TEST(ModelSummary, V3ParameterCountsMatchPublished) {
  const ParameterCounts p = count_parameters(v3_config());
  // Exact sum from the shapes of §1.8: 3 dense + 58 MoE layers, untied 129280×7168 embedding and head.
  const int64_t attention = 7168LL * 1536 + 1536 + 1536LL * 24576 + 7168LL * 576 + 512 + 512LL * 32768 +
                            16384LL * 7168;
  const int64_t expert = 3LL * 7168 * 2048;
  const int64_t dense_layer = attention + 2 * 7168 + 3LL * 7168 * 18432;
  const int64_t moe_layer = attention + 2 * 7168 + 256LL * 7168 + 256 + 257 * expert;
  const int64_t embed = 129280LL * 7168;
  EXPECT_EQ(p.total, 3 * dense_layer + 58 * moe_layer + 2 * embed + 7168);
  EXPECT_EQ(p.embedding, embed);
  EXPECT_EQ(p.lm_head, embed);
  EXPECT_EQ(p.routed_experts, 58LL * 256 * expert);
  // README: 671B total, 36.7B activated (paper abstract: 37B).
  EXPECT_NEAR(double(p.total) / 671e9, 1.0, 0.001) << p.total;
  EXPECT_NEAR(double(p.active_per_token) / 36.7e9, 1.0, 0.005) << p.active_per_token;
  const int64_t active_moe_layer = attention + 2 * 7168 + 256LL * 7168 + 256 + 9 * expert;
  EXPECT_EQ(p.active_per_token, 3 * dense_layer + 58 * active_moe_layer + embed + 7168 + 7168);
  // README_WEIGHTS.md: the MTP module has 11.5B unique parameters (besides the shared embedding and head).
  const int64_t mtp = 2 * 7168 + 7168LL * 14336 + moe_layer + 7168;
  EXPECT_EQ(p.mtp_total, mtp);
  EXPECT_NEAR(double(p.mtp_total) / 11.5e9, 1.0, 0.01) << p.mtp_total;
  // Together with the MTP module's stored copies of embedding and head: the 684.5B tensors of the HF checkpoint.
  EXPECT_NEAR(double(p.total + p.mtp_total + 2 * embed) / 684.5e9, 1.0, 0.001);
}

TEST(ModelSummary, V3KvCacheBytesPerToken) {
  const KvCacheSize kv = kv_cache_size(v3_config());
  EXPECT_EQ(kv.absorbed_values_per_layer, 576);
  EXPECT_EQ(kv.naive_values_per_layer, 40960);
  EXPECT_EQ(kv.absorbed_bf16_bytes_per_token(), 70272u);  // reference §1.5: 1152 B × 61
  EXPECT_EQ(kv.absorbed_f32_bytes_per_token(), 140544u);
  EXPECT_EQ(kv.naive_bf16_bytes_per_token(), 81920u * 61);
}

TEST(ModelSummary, GeneratorV3PresetIsTheOfficialConfig) {
  ModelConfig preset = checkpoint_preset("v3");
  ModelConfig official = v3_config();
  official.vocab_size = preset.vocab_size;
  EXPECT_EQ(count_parameters(preset).total, count_parameters(official).total);
  EXPECT_EQ(preset.fp8, official.fp8);
  EXPECT_EQ(preset.rope_scaling, official.rope_scaling);
  EXPECT_NEAR(preset.attention_softmax_scale(), 0.1352338, 1e-7);
}

TEST(ModelSummary, DecodeBytesCountTopKExpertsForOneToken) {
  const ModelConfig c = v3_config();
  // FP8 expert: 3 × 2048×7168 bytes + scales 3 × 16×56 floats.
  const double expert_bytes = 3.0 * 2048 * 7168 + 3.0 * 16 * 56 * 4;
  const double b1 = decode_weight_bytes_per_step(c, true, 1);
  const double b2 = decode_weight_bytes_per_step(c, true, 2);
  // A second token adds one embedding row (BF16) and, under uniform routing, 8·(1 − 8/256) more expert reads
  // per MoE layer in expectation (E·(1−(1−k/E)²) − k distinct experts).
  const double extra_experts = 256.0 * (1 - std::pow(1 - 8.0 / 256, 2)) - 8;
  EXPECT_NEAR(b2 - b1, 7168 * 2 + 58 * extra_experts * expert_bytes, 1.0);
  // One token reads roughly the FP8 size of the 36.6B active parameters (the BF16 head and embedding row add).
  EXPECT_GT(b1, 36.0e9);
  EXPECT_LT(b1, 40.0e9);
}

TEST(ModelSummary, TensorNamePattern) {
  EXPECT_EQ(tensor_name_pattern("model.layers.12.mlp.experts.7.up_proj.weight"),
            "model.layers.*.mlp.experts.*.up_proj.weight");
  EXPECT_EQ(tensor_name_pattern("lm_head.weight"), "lm_head.weight");
  EXPECT_EQ(tensor_name_pattern("model.layers.3a.x"), "model.layers.3a.x");
}

TEST(ModelSummary, CheckpointSummaryFindsMissingAndUnexpected) {
  ModelConfig c = checkpoint_preset("tiny");
  std::vector<StoredTensor> stored = {{"model.embed_tokens.weight", DType::BF16, 100},
                                      {"model.layers.0.self_attn.q_a_proj.weight", DType::F8_E4M3, 10},
                                      {"model.layers.1.self_attn.q_a_proj.weight", DType::F8_E4M3, 10},
                                      {"bogus.weight", DType::F32, 4}};
  const CheckpointSummary s = summarize_checkpoint(c, stored);
  EXPECT_EQ(s.total_bytes, 124u);
  EXPECT_EQ(s.bytes_by_dtype.at("F8_E4M3"), 20u);
  EXPECT_EQ(s.fp8_patterns.at("model.layers.*.self_attn.q_a_proj.weight"), 2);
  ASSERT_EQ(s.unexpected.size(), 1u);
  EXPECT_EQ(s.unexpected[0], "bogus.weight");
  EXPECT_FALSE(s.missing.empty());
}

}  // namespace
}  // namespace deepmoe
