// DeepSeekMoE math (reference §1.7; DESIGN.md §4), as model.py's MoE.forward splits it: the gate routes each token
// to its top-k routed experts, the routed experts run on the rows sent to them, the shared experts run on every
// token, and the result is y + z. Which rank hosts which expert, and how rows travel between ranks, is the
// engine's business (runtime/moe_layer_run.h): these functions see only this process's rows and expert slots.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "model/forward_context.h"
#include "model/model_weights.h"

namespace deepmoe {

// Dense SwiGLU MLP: out[T, hidden] = down(silu(gate x) · up x).
void mlp_forward(const ForwardContext& ctx, const MlpWeights& w, const float* x, int64_t T, float* out);

// Gate: scores = x · gateᵀ [T, n_routed] in FP32, then the config's scoring, group-limited top-k and weight
// normalization (model/gate.h). topk_idx [T, k] I32 logical experts, topk_weight [T, k] F32.
struct MoeRouting {
  Tensor topk_idx, topk_weight;
};
MoeRouting moe_gate(const ForwardContext& ctx, const MoeWeights& w, const float* x, int64_t T);

// Routed experts hosted in this process's slots: rows [row_offsets[s], row_offsets[s + 1]) of x go to local slot s
// (gate/up → SwiGLU → down, as grouped GEMMs); out [rows, hidden] is each row's expert output, not yet weighted.
void moe_routed_experts(const ForwardContext& ctx, const MoeWeights& w, const float* x, const int64_t* row_offsets,
                        int64_t slots, float* out);

// z = shared_experts(x) [T, hidden]; false (and out untouched) when the layer has no shared experts.
bool moe_shared_experts(const ForwardContext& ctx, const MoeWeights& w, const float* x, int64_t T, float* out);

}  // namespace deepmoe
