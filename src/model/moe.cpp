#include "model/moe.h"

#include "core/error.h"
#include "kernels/swiglu.h"
#include "model/config.h"
#include "model/gate.h"

namespace deepmoe {

void mlp_forward(const ForwardContext& ctx, const MlpWeights& w, const float* x, int64_t T, float* out) {
  const int64_t inter = w.gate.n;
  Scratch g(T * inter), u(T * inter);
  linear(ctx, x, T, w.gate, g.data());
  linear(ctx, x, T, w.up, u.data());
  swiglu(g.data(), u.data(), T * inter, g.data());
  linear(ctx, g.data(), T, w.down, out);
}

MoeRouting moe_gate(const ForwardContext& ctx, const MoeWeights& w, const float* x, int64_t T) {
  const ModelConfig& c = *ctx.config;
  const int64_t E = c.n_routed_experts, k = c.num_experts_per_tok;
  Tensor logits = Tensor::uninitialized(DType::F32, {T, E});
  linear(ctx, x, T, w.gate_matrix, logits.data<float>());
  MoeRouting r{Tensor::zeros(DType::I32, {T, k}), Tensor::zeros(DType::F32, {T, k})};
  route_tokens(c, logits.data<float>(), w.correction_bias.empty() ? nullptr : w.correction_bias.data(), T,
               r.topk_idx.data<int32_t>(), r.topk_weight.data<float>());
  return r;
}

void moe_routed_experts(const ForwardContext& ctx, const MoeWeights& w, const float* x, const int64_t* row_offsets,
                        int64_t slots, float* out) {
  DEEPMOE_CHECK(slots == int64_t(w.expert_gate.size()), "MoE: local slots differ from bound experts");
  const int64_t rows = row_offsets[slots], inter = ctx.config->moe_intermediate_size;
  if (rows == 0) return;
  Scratch g(rows * inter), u(rows * inter);
  grouped_gemm(x, row_offsets, slots, w.expert_gate.data(), g.data(), ctx.gemm, ctx.pool);
  grouped_gemm(x, row_offsets, slots, w.expert_up.data(), u.data(), ctx.gemm, ctx.pool);
  swiglu(g.data(), u.data(), rows * inter, g.data());
  grouped_gemm(g.data(), row_offsets, slots, w.expert_down.data(), out, ctx.gemm, ctx.pool);
}

bool moe_shared_experts(const ForwardContext& ctx, const MoeWeights& w, const float* x, int64_t T, float* out) {
  if (!w.has_shared) return false;
  mlp_forward(ctx, w.shared, x, T, out);
  return true;
}

}  // namespace deepmoe
