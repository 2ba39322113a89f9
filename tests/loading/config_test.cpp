// config.json parsing against the published DeepSeek-V3 and V2-Lite configs (reference/deepseek_v3_system.md
// §1.1), defaults, and the writer round trip. Rejections of bad configs live in corrupt_corpus_test.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mapped_file.h"
#include "model/config.h"

using namespace deepmoe;
using nlohmann::json;

namespace {

std::string data_path(const std::string& name) { return std::string(DEEPMOE_TEST_DATA_DIR) + "/loading/" + name; }
std::string read_data(const std::string& name) { return read_text_file(data_path(name)); }

// Every field of a published config.json that deepmoe writes back (model_config_to_json, HF spelling) has its
// published value: the parsed config holds each field under the right name.
void expect_published_values(const ModelConfig& c, const std::string& name) {
  const json published = json::parse(read_data(name));
  const json written = json::parse(model_config_to_json(c));
  size_t compared = 0;
  for (auto it = written.begin(); it != written.end(); ++it) {
    if (!published.contains(it.key())) continue;
    EXPECT_EQ(*it, published[it.key()]) << name << ": " << it.key();
    ++compared;
  }
  EXPECT_GE(compared, 30u) << name;
}

}  // namespace

TEST(ModelConfig, ParsesDeepSeekV3) {
  ModelConfig c = parse_model_config(read_data("deepseek_v3_config.json"), "v3/config.json");
  expect_published_values(c, "deepseek_v3_config.json");
  // The values the model code depends on most, spelled out (reference §1.1).
  EXPECT_EQ(c.arch, ModelArch::DeepseekV3);
  EXPECT_EQ(c.vocab_size, 129280);
  EXPECT_EQ(c.hidden_size, 7168);
  EXPECT_EQ(c.num_hidden_layers, 61);
  EXPECT_EQ(c.num_layers_with_mtp(), 62);
  EXPECT_EQ(c.qk_head_dim(), 192);
  EXPECT_EQ(c.n_routed_experts, 256);
  EXPECT_EQ(c.num_experts_per_tok, 8);
  EXPECT_EQ(c.scoring_func, "sigmoid");
  EXPECT_EQ(c.topk_method, "noaux_tc");
  EXPECT_TRUE(c.has_correction_bias());
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 40);
  EXPECT_TRUE(c.fp8);
  EXPECT_EQ(c.fp8_scale_fmt, "");
  // Dense layers 0..2, MoE from 3 on, and the MTP layer 61 is a MoE layer too (reference §1.8, §1.9).
  for (int64_t l = 0; l < 3; ++l) EXPECT_FALSE(c.is_moe_layer(l)) << l;
  for (int64_t l = 3; l <= 61; ++l) EXPECT_TRUE(c.is_moe_layer(l)) << l;
  // Reference §1.4: 192^-0.5 · (0.1·ln 40 + 1)² = 0.1352338.
  EXPECT_NEAR(c.attention_softmax_scale(), 0.1352338, 5e-7);
}

TEST(ModelConfig, ParsesDeepSeekV2Lite) {
  ModelConfig c = parse_model_config(read_data("deepseek_v2_lite_config.json"), "v2lite/config.json");
  expect_published_values(c, "deepseek_v2_lite_config.json");
  EXPECT_EQ(c.arch, ModelArch::DeepseekV2);
  EXPECT_EQ(c.q_lora_rank, 0);  // null
  EXPECT_EQ(c.num_nextn_predict_layers, 0);
  EXPECT_EQ(c.n_routed_experts, 64);
  EXPECT_EQ(c.n_shared_experts, 2);
  EXPECT_EQ(c.num_experts_per_tok, 6);
  EXPECT_EQ(c.n_group, 1);
  EXPECT_EQ(c.topk_group, 1);
  EXPECT_EQ(c.scoring_func, "softmax");
  EXPECT_EQ(c.topk_method, "greedy");
  EXPECT_FALSE(c.has_correction_bias());
  EXPECT_FALSE(c.norm_topk_prob);
  EXPECT_FALSE(c.fp8);
  EXPECT_EQ(c.bos_token_id, 100000);
  EXPECT_EQ(c.eos_token_id, 100001);
  EXPECT_FALSE(c.is_moe_layer(0));
  EXPECT_TRUE(c.is_moe_layer(1));
  EXPECT_TRUE(c.is_moe_layer(26));
  double m = 0.1 * 0.707 * std::log(40.0) + 1.0;
  EXPECT_NEAR(c.attention_softmax_scale(), m * m / std::sqrt(192.0), 1e-12);
}

TEST(ModelConfig, MoeLayerFrequencyAndDefaults) {
  json j = json::parse(read_data("deepseek_v2_lite_config.json"));
  j["moe_layer_freq"] = 2;
  j["first_k_dense_replace"] = 2;
  j.erase("rope_scaling");  // plain RoPE (as Moonlight)
  j.erase("n_group");
  j.erase("topk_group");
  j.erase("scoring_func");
  j.erase("topk_method");
  j.erase("torch_dtype");
  j["eos_token_id"] = json::array({7, 9});
  ModelConfig c = parse_model_config(j.dump(), "cfg.json");
  EXPECT_FALSE(c.is_moe_layer(0));
  EXPECT_FALSE(c.is_moe_layer(1));
  EXPECT_TRUE(c.is_moe_layer(2));
  EXPECT_FALSE(c.is_moe_layer(3));
  EXPECT_TRUE(c.is_moe_layer(4));
  EXPECT_FALSE(c.rope_scaling.yarn);
  EXPECT_NEAR(c.attention_softmax_scale(), 1.0 / std::sqrt(192.0), 1e-15);
  EXPECT_EQ(c.n_group, 1);
  EXPECT_EQ(c.topk_group, 1);
  EXPECT_EQ(c.scoring_func, "softmax");  // DeepseekV2Config defaults
  EXPECT_EQ(c.topk_method, "greedy");
  EXPECT_EQ(c.eos_token_id, 7);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{7, 9}));
}

TEST(ModelConfig, AcceptsNewerRopeTypeSpellingAndUe8m0Scales) {
  json j = json::parse(read_data("deepseek_v3_config.json"));
  j["rope_scaling"].erase("type");
  j["rope_scaling"]["rope_type"] = "yarn";
  j["quantization_config"]["scale_fmt"] = "ue8m0";  // V3.1
  ModelConfig c = parse_model_config(j.dump(), "cfg.json");
  EXPECT_TRUE(c.rope_scaling.yarn);
  EXPECT_EQ(c.fp8_scale_fmt, "ue8m0");
}

TEST(ModelConfig, WriterRoundTrips) {
  for (const char* name : {"deepseek_v3_config.json", "deepseek_v2_lite_config.json"}) {
    ModelConfig c = parse_model_config(read_data(name), name);
    std::string text = model_config_to_json(c);
    ModelConfig back = parse_model_config(text, "written.json");
    EXPECT_EQ(back, c) << name << "\n" << text;
    // HF spelling: q_lora_rank null for "none", the fp8 block as [128, 128].
    json j = json::parse(text);
    EXPECT_EQ(j["architectures"][0], std::string(model_arch_name(c.arch)));
    if (c.q_lora_rank == 0) {
      EXPECT_TRUE(j["q_lora_rank"].is_null());
    }
    if (c.fp8) {
      EXPECT_EQ(j["quantization_config"]["weight_block_size"], json::array({128, 128}));
    }
  }
  ModelConfig c = parse_model_config(read_data("deepseek_v3_config.json"), "x");
  c.eos_token_ids = {1, 5};
  c.rope_scaling = RopeScaling{};
  c.fp8 = false;
  EXPECT_EQ(parse_model_config(model_config_to_json(c), "y"), c);
}

TEST(ModelConfig, LoadsFromAModelFolder) {
  ModelConfig c = load_model_config(std::string(DEEPMOE_TEST_DATA_DIR) + "/loading/v3_folder");
  EXPECT_EQ(c.hidden_size, 7168);
  try {
    load_model_config(std::string(DEEPMOE_TEST_DATA_DIR) + "/loading/no_such_folder");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no_such_folder/config.json"), std::string::npos) << e.what();
  }
}
