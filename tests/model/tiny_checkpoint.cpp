#include "tiny_checkpoint.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

#include <unistd.h>

#include "core/error.h"
#include "core/tensor.h"
#include "kernels/quantize.h"
#include "model/checkpoint_layout.h"
#include "model/safetensors_writer.h"

namespace deepmoe::testing_util {

ModelConfig tiny_v3_config() {
  ModelConfig c;
  c.arch = ModelArch::DeepseekV3;
  c.vocab_size = 512;
  c.hidden_size = 256;
  c.intermediate_size = 384;
  c.moe_intermediate_size = 128;
  c.num_hidden_layers = 3;
  c.num_nextn_predict_layers = 1;
  c.num_attention_heads = 4;
  c.q_lora_rank = 128;
  c.kv_lora_rank = 128;
  c.qk_nope_head_dim = 32;
  c.qk_rope_head_dim = 16;
  c.v_head_dim = 32;
  c.n_routed_experts = 16;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 4;
  c.n_group = 4;
  c.topk_group = 2;
  c.first_k_dense_replace = 1;
  c.moe_layer_freq = 1;
  c.max_position_embeddings = 163840;
  c.bos_token_id = 0;
  c.eos_token_id = 1;
  c.eos_token_ids = {1};
  c.scoring_func = "sigmoid";
  c.topk_method = "noaux_tc";
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 2.5;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 10000;
  c.rope_scaling = {true, 40, 32, 1, 1.0, 1.0, 4096};
  c.fp8 = true;
  return c;
}

ModelConfig tiny_v2_config(const std::string& topk_method, double routed_scaling_factor) {
  ModelConfig c = tiny_v3_config();
  c.arch = ModelArch::DeepseekV2;
  c.num_nextn_predict_layers = 0;
  c.q_lora_rank = 0;
  c.n_shared_experts = 2;
  c.num_experts_per_tok = 6;
  c.scoring_func = "softmax";
  c.topk_method = topk_method;
  c.norm_topk_prob = false;
  c.routed_scaling_factor = routed_scaling_factor;
  if (topk_method == "greedy") c.n_group = c.topk_group = 1;
  c.rope_scaling = {true, 40, 32, 1, 0.707, 0.707, 4096};
  return c;
}

namespace {

uint64_t name_hash(const std::string& s, uint64_t seed) {
  uint64_t h = 1469598103934665603ull ^ seed;
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
  return h;
}

// Values for one tensor, scaled so that every projection keeps unit-variance activations.
std::vector<float> draw(const TensorSpec& spec, uint64_t seed) {
  std::mt19937_64 rng(name_hash(spec.value_source.empty() ? spec.name : spec.value_source, seed));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(spec.numel()));
  float lo = 0, scale = 1;
  switch (spec.role) {
    case TensorRole::Norm: lo = 1.0f; scale = 0.2f; break;
    case TensorRole::CorrectionBias: scale = 0.05f; break;
    case TensorRole::Embedding: scale = std::sqrt(3.0f); break;
    default: scale = std::sqrt(3.0f / float(spec.fan_in())); break;
  }
  for (auto& x : v) x = lo + scale * u(rng);
  return v;
}

Tensor owned(DType dtype, const std::vector<int64_t>& shape) {
  return Tensor::zeros(dtype, std::span<const int64_t>(shape.data(), shape.size()));
}

}  // namespace

uint64_t write_tiny_checkpoint(const ModelConfig& cfg_in, const std::string& dir, WeightFormat format,
                               uint64_t seed) {
  std::filesystem::create_directories(dir);
  ModelConfig cfg = cfg_in;
  cfg.fp8 = format == WeightFormat::Fp8;
  {
    std::ofstream f(dir + "/config.json");
    f << model_config_to_json(cfg);
  }
  const bool fp8_layout = format != WeightFormat::Bf16;
  SafetensorsWriter writer;
  for (const TensorSpec& spec : checkpoint_layout(cfg, fp8_layout)) {
    if (spec.role == TensorRole::ScaleInv) continue;  // written with its weight
    std::vector<float> v = draw(spec, seed);
    const bool quantized = spec.dtype == DType::F8_E4M3;
    if (quantized) {
      const int64_t n = spec.shape[0], k = spec.shape[1];
      Tensor q = owned(DType::F8_E4M3, spec.shape);
      Tensor s = owned(DType::F32, block_scale_shape(n, k));
      quantize_weight_128x128(v.data(), n, k, q.data<uint8_t>(), s.data<float>());
      if (format == WeightFormat::Fp8) {
        writer.add(spec.name, q);
        writer.add(spec.name + "_scale_inv", s);
      } else {
        Tensor d = owned(DType::F32, spec.shape);
        dequantize_weight_128x128(q.data<uint8_t>(), s.data<float>(), n, k, d.data<float>());
        writer.add(spec.name, d);
      }
      continue;
    }
    Tensor t = owned(spec.dtype, spec.shape);
    if (spec.dtype == DType::F32)
      std::copy(v.begin(), v.end(), t.data<float>());
    else if (spec.dtype == DType::BF16)
      convert_f32_to_bf16(v.data(), t.data<uint16_t>(), v.size());
    else
      throw Error("tiny checkpoint: unexpected dtype for " + spec.name);
    writer.add(spec.name, t);
  }
  const std::string path = dir + "/model.safetensors";
  writer.write(path);
  return std::filesystem::file_size(path);
}

namespace {

// Folders made by temp_dir(), removed when the test process exits.
struct TempDirs {
  std::vector<std::string> dirs;
  ~TempDirs() {
    for (const auto& d : dirs) {
      std::error_code ec;
      std::filesystem::remove_all(d, ec);
    }
  }
};

}  // namespace

std::string temp_dir(const std::string& name) {
  static TempDirs cleanup;
  std::string dir = (std::filesystem::temp_directory_path() /
                     ("deepmoe_model_test_" + name + "_" + std::to_string(::getpid())))
                        .string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  cleanup.dirs.push_back(dir);
  return dir;
}

}  // namespace deepmoe::testing_util
