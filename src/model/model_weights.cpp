#include "model/model_weights.h"

#include "core/error.h"
#include "kernels/quantize.h"
#include "model/config.h"
#include "model/safetensors.h"

namespace deepmoe {
namespace {

std::string shape_string(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

const TensorInfo& require(const Checkpoint& ckpt, const std::string& name, const std::vector<int64_t>& shape) {
  if (!ckpt.contains(name))
    throw Error("missing tensor " + name + " (expected shape " + shape_string(shape) + ") in " + ckpt.dir(),
                {ckpt.dir(), name, ""});
  const TensorInfo& info = ckpt.info(name);
  if (info.shape != shape)
    throw Error("tensor " + name + " has shape " + shape_string(info.shape) + ", expected " + shape_string(shape),
                {ckpt.file_of(name), name, ""});
  return info;
}

bool is_float_dtype(DType d) { return d == DType::F32 || d == DType::BF16 || d == DType::F16; }

std::string p(int64_t layer) { return "model.layers." + std::to_string(layer) + "."; }

MlpWeights bind_mlp(const Checkpoint& ckpt, const std::string& prefix, int64_t hidden, int64_t inter) {
  return {bind_linear(ckpt, prefix + "gate_proj", inter, hidden), bind_linear(ckpt, prefix + "up_proj", inter, hidden),
          bind_linear(ckpt, prefix + "down_proj", hidden, inter)};
}

// kv_b_proj rows as FP32 [H·(nope+v), kv_lora_rank], dequantized exactly (q · scale_inv).
std::vector<float> dequantize_all(const Checkpoint& ckpt, const std::string& name, const WeightMatrix& w) {
  std::vector<float> out(static_cast<size_t>(w.n * w.k));
  if (w.dtype == DType::F8_E4M3)
    dequantize_weight_128x128(static_cast<const uint8_t*>(w.data), w.scale_inv, w.n, w.k, out.data());
  else
    convert_to_f32(w.dtype, w.data, out.data(), out.size());
  return out;
}

AttentionWeights bind_attention(const Checkpoint& ckpt, const ModelConfig& c, int64_t layer) {
  const std::string a = p(layer) + "self_attn.";
  const int64_t H = c.num_attention_heads, qk = c.qk_head_dim(), nope = c.qk_nope_head_dim, v = c.v_head_dim,
                C = c.kv_lora_rank;
  AttentionWeights w;
  if (c.q_lora_rank > 0) {
    w.q_a = bind_linear(ckpt, a + "q_a_proj", c.q_lora_rank, c.hidden_size);
    w.q_a_norm = load_vector(ckpt, a + "q_a_layernorm.weight", c.q_lora_rank);
    w.q_b = bind_linear(ckpt, a + "q_b_proj", H * qk, c.q_lora_rank);
  } else {
    w.q = bind_linear(ckpt, a + "q_proj", H * qk, c.hidden_size);
  }
  w.kv_a = bind_linear(ckpt, a + "kv_a_proj_with_mqa", C + c.qk_rope_head_dim, c.hidden_size);
  w.kv_a_norm = load_vector(ckpt, a + "kv_a_layernorm.weight", C);
  w.kv_b = bind_linear(ckpt, a + "kv_b_proj", H * (nope + v), C);
  w.o = bind_linear(ckpt, a + "o_proj", c.hidden_size, H * v);
  // model.py absorb: wkv_b.view(H, nope + v, C); W_UK = [:, :nope], W_UV = [:, nope:].
  w.w_uk_t.resize(size_t(H));
  w.w_uv.resize(size_t(H));
  if (w.kv_b.dtype == DType::F8_E4M3 && nope % 128 == 0 && v % 128 == 0) {
    const int64_t kcb = quant_blocks(C), nb = nope / 128;
    const auto* kv_b = static_cast<const uint8_t*>(w.kv_b.data);
    w.w_uk_t_fp8.resize(size_t(H * C * nope));
    w.w_uk_t_scales.resize(size_t(H * kcb * nb));
    for (int64_t h = 0; h < H; ++h) {
      const int64_t head_row = h * (nope + v);
      uint8_t* t = w.w_uk_t_fp8.data() + h * C * nope;
      for (int64_t d = 0; d < nope; ++d)
        for (int64_t j = 0; j < C; ++j) t[j * nope + d] = kv_b[(head_row + d) * C + j];
      float* ts = w.w_uk_t_scales.data() + h * kcb * nb;
      for (int64_t jb = 0; jb < kcb; ++jb)
        for (int64_t db = 0; db < nb; ++db) ts[jb * nb + db] = w.kv_b.scale_inv[(head_row / 128 + db) * kcb + jb];
      w.w_uk_t[size_t(h)] = {DType::F8_E4M3, C, nope, t, ts};
      const int64_t v_row = head_row + nope;
      w.w_uv[size_t(h)] = {DType::F8_E4M3, v, C, kv_b + v_row * C, w.kv_b.scale_inv + (v_row / 128) * kcb};
    }
    return w;
  }
  std::vector<float> kv_b = dequantize_all(ckpt, a + "kv_b_proj", w.kv_b);
  w.w_uk_t_f32.resize(static_cast<size_t>(H * C * nope));
  w.w_uv_f32.resize(static_cast<size_t>(H * v * C));
  for (int64_t h = 0; h < H; ++h) {
    const float* rows = kv_b.data() + h * (nope + v) * C;
    for (int64_t d = 0; d < nope; ++d)
      for (int64_t j = 0; j < C; ++j) w.w_uk_t_f32[size_t((h * C + j) * nope + d)] = rows[d * C + j];
    for (int64_t d = 0; d < v; ++d)
      for (int64_t j = 0; j < C; ++j) w.w_uv_f32[size_t((h * v + d) * C + j)] = rows[(nope + d) * C + j];
    w.w_uk_t[size_t(h)] = {DType::F32, C, nope, w.w_uk_t_f32.data() + h * C * nope, nullptr};
    w.w_uv[size_t(h)] = {DType::F32, v, C, w.w_uv_f32.data() + h * v * C, nullptr};
  }
  return w;
}

}  // namespace

WeightMatrix bind_linear(const Checkpoint& ckpt, const std::string& name, int64_t n, int64_t k) {
  const std::string wname = name + ".weight";
  const TensorInfo& info = require(ckpt, wname, {n, k});
  WeightMatrix w;
  w.dtype = info.dtype;
  w.n = n;
  w.k = k;
  if (info.dtype == DType::F8_E4M3) {
    const std::string sname = name + ".weight_scale_inv";
    const TensorInfo& sinfo = require(ckpt, sname, {(n + 127) / 128, (k + 127) / 128});
    if (sinfo.dtype != DType::F32)
      throw Error("tensor " + sname + " has dtype " + std::string(dtype_name(sinfo.dtype)) + ", expected F32",
                  {ckpt.file_of(sname), sname, ""});
    w.scale_inv = ckpt.get(sname).data<const float>();
  } else if (info.dtype != DType::F32 && info.dtype != DType::BF16) {
    throw Error("tensor " + wname + " has dtype " + std::string(dtype_name(info.dtype)) +
                    ", expected F8_E4M3, BF16 or F32",
                {ckpt.file_of(wname), wname, ""});
  }
  w.data = ckpt.get(wname).raw();
  return w;
}

std::vector<float> load_vector(const Checkpoint& ckpt, const std::string& name, int64_t n) {
  const TensorInfo& info = require(ckpt, name, {n});
  if (!is_float_dtype(info.dtype))
    throw Error("tensor " + name + " has dtype " + std::string(dtype_name(info.dtype)) + ", expected F32/BF16/F16",
                {ckpt.file_of(name), name, ""});
  std::vector<float> out(static_cast<size_t>(n));
  convert_to_f32(info.dtype, ckpt.get(name).raw(), out.data(), out.size());
  return out;
}

Tensor bind_tensor(const Checkpoint& ckpt, const std::string& name, int64_t rows, int64_t cols) {
  const TensorInfo& info = require(ckpt, name, {rows, cols});
  if (!is_float_dtype(info.dtype))
    throw Error("tensor " + name + " has dtype " + std::string(dtype_name(info.dtype)) + ", expected F32/BF16/F16",
                {ckpt.file_of(name), name, ""});
  return ckpt.get(name);
}

LayerWeights bind_layer(const Checkpoint& ckpt, const ModelConfig& c, int64_t layer,
                        const std::vector<int>& local_experts) {
  LayerWeights w;
  w.index = layer;
  w.moe = c.is_moe_layer(layer);
  w.input_norm = load_vector(ckpt, p(layer) + "input_layernorm.weight", c.hidden_size);
  w.post_attention_norm = load_vector(ckpt, p(layer) + "post_attention_layernorm.weight", c.hidden_size);
  w.attn = bind_attention(ckpt, c, layer);
  const std::string m = p(layer) + "mlp.";
  if (!w.moe) {
    w.mlp = bind_mlp(ckpt, m, c.hidden_size, c.intermediate_size);
    return w;
  }
  MoeWeights& e = w.moe_weights;
  e.gate = bind_tensor(ckpt, m + "gate.weight", c.n_routed_experts, c.hidden_size);
  e.gate_matrix = {e.gate.dtype(), c.n_routed_experts, c.hidden_size, e.gate.raw(), nullptr};
  if (e.gate.dtype() == DType::F16) {
    throw Error("tensor " + m + "gate.weight: F16 router weights are not supported (expected BF16 or F32)",
                {ckpt.file_of(m + "gate.weight"), m + "gate.weight", ""});
  }
  if (c.has_correction_bias())
    e.correction_bias = load_vector(ckpt, m + "gate.e_score_correction_bias", c.n_routed_experts);
  for (int expert : local_experts) {
    MlpWeights x = bind_mlp(ckpt, m + "experts." + std::to_string(expert) + ".", c.hidden_size,
                            c.moe_intermediate_size);
    e.expert_gate.push_back(x.gate);
    e.expert_up.push_back(x.up);
    e.expert_down.push_back(x.down);
  }
  if (c.n_shared_experts > 0) {
    e.has_shared = true;
    e.shared = bind_mlp(ckpt, m + "shared_experts.", c.hidden_size, c.n_shared_experts * c.moe_intermediate_size);
  }
  return w;
}

MtpWeights bind_mtp(const Checkpoint& ckpt, const ModelConfig& c, const std::vector<int>& local_experts) {
  const int64_t L = c.num_hidden_layers;
  MtpWeights w;
  w.enorm = load_vector(ckpt, p(L) + "enorm.weight", c.hidden_size);
  w.hnorm = load_vector(ckpt, p(L) + "hnorm.weight", c.hidden_size);
  w.eh_proj = bind_linear(ckpt, p(L) + "eh_proj", c.hidden_size, 2 * c.hidden_size);
  w.head_norm = load_vector(ckpt, p(L) + "shared_head.norm.weight", c.hidden_size);
  // The MTP layer's embed_tokens and shared_head.head duplicate the main model's (README_WEIGHTS.md); when a
  // checkpoint leaves them out, the model uses the main ones.
  if (ckpt.contains(p(L) + "shared_head.head.weight"))
    w.head = bind_linear(ckpt, p(L) + "shared_head.head", c.vocab_size, c.hidden_size);
  if (ckpt.contains(p(L) + "embed_tokens.weight"))
    w.embed = bind_tensor(ckpt, p(L) + "embed_tokens.weight", c.vocab_size, c.hidden_size);
  w.block = bind_layer(ckpt, c, L, local_experts);
  return w;
}

void embedding_row(const Tensor& embed, int64_t token, float* out) {
  const int64_t hidden = embed.dim(1);
  const uint8_t* base = static_cast<const uint8_t*>(embed.raw());
  convert_to_f32(embed.dtype(), base + size_t(token * hidden) * dtype_size_bytes(embed.dtype()), out,
                 size_t(hidden));
}

}  // namespace deepmoe
