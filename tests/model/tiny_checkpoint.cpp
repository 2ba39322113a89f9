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
#include "checkpoint/safetensors_writer.h"

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

enum class Kind { Embedding, Norm, Projection, Bf16Projection, Bias };

// One tensor of the HF layout (reference §1.8, §1.9). `source` names the tensor whose values it repeats (the
// MTP layer's embed_tokens and shared_head.head duplicate the main model's).
struct Spec {
  std::string name;
  std::vector<int64_t> shape;
  Kind kind;
  std::string source;
};

std::vector<Spec> layout(const ModelConfig& c) {
  std::vector<Spec> out;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, Kind kind, std::string source = "") {
    out.push_back({name, std::move(shape), kind, source.empty() ? name : source});
  };
  const int64_t D = c.hidden_size, H = c.num_attention_heads, qk = c.qk_head_dim(), C = c.kv_lora_rank;
  add("model.embed_tokens.weight", {c.vocab_size, D}, Kind::Embedding);
  for (int64_t l = 0; l < c.num_layers_with_mtp(); ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    if (l >= c.num_hidden_layers) {  // MTP module
      add(p + "embed_tokens.weight", {c.vocab_size, D}, Kind::Embedding, "model.embed_tokens.weight");
      add(p + "enorm.weight", {D}, Kind::Norm);
      add(p + "hnorm.weight", {D}, Kind::Norm);
      add(p + "eh_proj.weight", {D, 2 * D}, Kind::Bf16Projection);
      add(p + "shared_head.norm.weight", {D}, Kind::Norm);
      add(p + "shared_head.head.weight", {c.vocab_size, D}, Kind::Bf16Projection, "lm_head.weight");
    }
    add(p + "input_layernorm.weight", {D}, Kind::Norm);
    add(p + "post_attention_layernorm.weight", {D}, Kind::Norm);
    const std::string a = p + "self_attn.";
    if (c.q_lora_rank > 0) {
      add(a + "q_a_proj.weight", {c.q_lora_rank, D}, Kind::Projection);
      add(a + "q_a_layernorm.weight", {c.q_lora_rank}, Kind::Norm);
      add(a + "q_b_proj.weight", {H * qk, c.q_lora_rank}, Kind::Projection);
    } else {
      add(a + "q_proj.weight", {H * qk, D}, Kind::Projection);
    }
    add(a + "kv_a_proj_with_mqa.weight", {C + c.qk_rope_head_dim, D}, Kind::Projection);
    add(a + "kv_a_layernorm.weight", {C}, Kind::Norm);
    add(a + "kv_b_proj.weight", {H * (c.qk_nope_head_dim + c.v_head_dim), C}, Kind::Projection);
    add(a + "o_proj.weight", {D, H * c.v_head_dim}, Kind::Projection);
    auto mlp = [&](const std::string& m, int64_t inter) {
      add(m + "gate_proj.weight", {inter, D}, Kind::Projection);
      add(m + "up_proj.weight", {inter, D}, Kind::Projection);
      add(m + "down_proj.weight", {D, inter}, Kind::Projection);
    };
    if (!c.is_moe_layer(l)) {
      mlp(p + "mlp.", c.intermediate_size);
      continue;
    }
    add(p + "mlp.gate.weight", {c.n_routed_experts, D}, Kind::Bf16Projection);
    if (c.has_correction_bias()) add(p + "mlp.gate.e_score_correction_bias", {c.n_routed_experts}, Kind::Bias);
    for (int64_t e = 0; e < c.n_routed_experts; ++e)
      mlp(p + "mlp.experts." + std::to_string(e) + ".", c.moe_intermediate_size);
    if (c.n_shared_experts > 0) mlp(p + "mlp.shared_experts.", c.n_shared_experts * c.moe_intermediate_size);
  }
  add("model.norm.weight", {D}, Kind::Norm);
  add("lm_head.weight", {c.vocab_size, D}, Kind::Bf16Projection);
  return out;
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Values for one tensor, scaled so that every projection keeps unit-variance activations.
std::vector<float> draw(const Spec& spec, uint64_t seed) {
  std::mt19937_64 rng(name_hash(spec.source, seed));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(numel(spec.shape)));
  float lo = 0, scale = 1;
  switch (spec.kind) {
    case Kind::Norm: lo = 1.0f; scale = 0.2f; break;
    case Kind::Bias: scale = 0.05f; break;
    case Kind::Embedding: scale = std::sqrt(3.0f); break;
    default: scale = std::sqrt(3.0f / float(spec.shape[1])); break;
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
  SafetensorsWriter writer;
  for (const Spec& spec : layout(cfg)) {
    std::vector<float> v = draw(spec, seed);
    if (spec.kind == Kind::Projection && format != WeightFormat::Bf16) {
      const int64_t n = spec.shape[0], k = spec.shape[1];
      Tensor q = owned(DType::F8_E4M3, spec.shape);
      Tensor s = owned(DType::F32, {(n + 127) / 128, (k + 127) / 128});
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
    // Norms, embeddings, router, eh_proj and heads are BF16 in the official checkpoints; the bias is F32.
    Tensor t = owned(spec.kind == Kind::Bias ? DType::F32 : DType::BF16, spec.shape);
    if (t.dtype() == DType::F32)
      std::copy(v.begin(), v.end(), t.data<float>());
    else
      convert_f32_to_bf16(v.data(), t.data<uint16_t>(), v.size());
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
