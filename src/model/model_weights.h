// The weights of a DeepSeek-V3 / V2 checkpoint bound by their Hugging Face names (reference §1.8, §1.9).
//
// Projections stay where the checkpoint mapping put them: a WeightMatrix points into the mmap (FP8 e4m3 with its
// weight_scale_inv, or BF16 / F32), so loading copies nothing big. Small vectors (RMSNorm weights, the gate's
// correction bias) are converted to FP32 once. The only derived tensors are MLA's per-head W_UK and W_UV halves
// of kv_b_proj dequantized to FP32 for the absorbed form (model.py dequantizes them on every call instead).
//
// Every tensor is checked on binding: missing, wrong dtype or wrong shape is an Error naming the tensor and the
// expected and actual shape.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "kernels/gemm.h"

namespace deepmoe {

class Checkpoint;
struct ModelConfig;

struct MlpWeights {  // w2(silu(w1 x) * w3 x): gate_proj = w1, up_proj = w3, down_proj = w2
  WeightMatrix gate, up, down;
};

struct AttentionWeights {
  WeightMatrix q_a, q_b, q;  // q_a/q_b with q LoRA (q_lora_rank > 0), else q (q_proj)
  std::vector<float> q_a_norm;
  WeightMatrix kv_a;  // kv_a_proj_with_mqa [kv_lora_rank + rope, hidden]
  std::vector<float> kv_a_norm;
  WeightMatrix kv_b;  // kv_b_proj [H·(nope + v), kv_lora_rank]
  WeightMatrix o;     // o_proj [hidden, H·v]
  // Absorbed form, per head h as GEMM operands: W_UKᵀ[h] = kv_b's k_nope rows of head h transposed
  // [kv_lora_rank, nope], and W_UV[h] = its v rows [v, kv_lora_rank]. With an FP8 kv_b whose heads start on
  // 128-row blocks (nope and v multiples of 128: V2, V3, Kimi) they stay FP8: W_UV[h] is a view into kv_b and
  // W_UKᵀ[h] a transposed copy of its bytes with the scale grid transposed, which is exact. Otherwise FP32 copies.
  // The matrices point into the storage below: move this struct, never copy it.
  std::vector<WeightMatrix> w_uk_t, w_uv;
  std::vector<uint8_t> w_uk_t_fp8;   // [H][kv_lora_rank, nope] e4m3
  std::vector<float> w_uk_t_scales;  // [H][ceil(kv_lora_rank/128), nope/128]
  std::vector<float> w_uk_t_f32, w_uv_f32;

  AttentionWeights() = default;
  AttentionWeights(AttentionWeights&&) = default;
  AttentionWeights& operator=(AttentionWeights&&) = default;
  AttentionWeights(const AttentionWeights&) = delete;
  AttentionWeights& operator=(const AttentionWeights&) = delete;
};

struct MoeWeights {
  Tensor gate;                        // mlp.gate.weight [n_routed, hidden] (BF16/F32)
  WeightMatrix gate_matrix;           // the same as a GEMM operand
  std::vector<float> correction_bias;  // e_score_correction_bias [n_routed], empty when the method has none
  // Routed experts hosted on this rank, by local slot (ExpertPlacement order).
  std::vector<WeightMatrix> expert_gate, expert_up, expert_down;
  bool has_shared = false;
  MlpWeights shared;  // shared_experts (n_shared · moe_intermediate wide)
};

struct LayerWeights {
  int64_t index = 0;  // the checkpoint's layer number
  bool moe = false;
  std::vector<float> input_norm, post_attention_norm;
  AttentionWeights attn;
  MlpWeights mlp;  // dense layers
  MoeWeights moe_weights;
};

struct MtpWeights {
  std::vector<float> enorm, hnorm, head_norm;
  WeightMatrix eh_proj;  // [hidden, 2·hidden]: input is cat[enorm(emb), hnorm(h)]
  LayerWeights block;
  Tensor embed;       // the MTP layer's embed_tokens (shared with the main model); undefined = use the main one
  WeightMatrix head;  // shared_head.head (shared with lm_head); data == nullptr = use lm_head
};

// Binding helpers (exposed for the loader's tests).
// "<name>.weight" [n, k] F32/BF16, or F8_E4M3 with "<name>.weight_scale_inv" F32 [ceil(n/128), ceil(k/128)].
WeightMatrix bind_linear(const Checkpoint& ckpt, const std::string& name, int64_t n, int64_t k);
// A 1-D tensor of `n` values (F32/BF16/F16) converted to FP32.
std::vector<float> load_vector(const Checkpoint& ckpt, const std::string& name, int64_t n);
// A 2-D tensor of exactly this shape and a float dtype (a zero-copy view).
Tensor bind_tensor(const Checkpoint& ckpt, const std::string& name, int64_t rows, int64_t cols);

// One transformer layer; `local_experts` lists the logical experts this rank hosts, in local-slot order.
LayerWeights bind_layer(const Checkpoint& ckpt, const ModelConfig& cfg, int64_t layer,
                        const std::vector<int>& local_experts);
MtpWeights bind_mtp(const Checkpoint& ckpt, const ModelConfig& cfg, const std::vector<int>& local_experts);

// Row `token` of an embedding [vocab, hidden] (BF16/F32/F16) into out[hidden] as FP32.
void embedding_row(const Tensor& embed, int64_t token, float* out);

}  // namespace deepmoe
