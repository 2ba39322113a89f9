#include "model/moe.h"

#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "kernels/swiglu.h"
#include "model/config.h"
#include "model/gate.h"
#include "parallel/moe_dispatch.h"

namespace deepmoe {

void mlp_forward(const ForwardContext& ctx, const MlpWeights& w, const float* x, int64_t T, float* out) {
  const int64_t inter = w.gate.n;
  Scratch g(T * inter), u(T * inter);
  linear(ctx, x, T, w.gate, g.data());
  linear(ctx, x, T, w.up, u.data());
  swiglu(g.data(), u.data(), T * inter, g.data());
  linear(ctx, g.data(), T, w.down, out);
}

void moe_forward(const ForwardContext& ctx, const MoeWeights& w, const MoeRuntime& rt, const float* x, int64_t T,
                 float* out) {
  const ModelConfig& c = *ctx.config;
  const int64_t E = c.n_routed_experts, k = c.num_experts_per_tok, hidden = c.hidden_size,
                inter = c.moe_intermediate_size;
  // Route: logits = x · gateᵀ [T, E] in FP32, then the per-row gate.
  Tensor logits = Tensor::zeros(DType::F32, {T, E});
  linear(ctx, x, T, w.gate_matrix, logits.data<float>());
  Tensor topk_idx = Tensor::zeros(DType::I32, {T, k}), topk_weight = Tensor::zeros(DType::F32, {T, k});
  route_tokens(c, logits.data<float>(), w.correction_bias.empty() ? nullptr : w.correction_bias.data(), T,
               topk_idx.data<int32_t>(), topk_weight.data<float>());

  // Dispatch: this rank's expert inputs, grouped by local slot.
  Tensor xt = Tensor::view(DType::F32, {T, hidden}, const_cast<float*>(x));
  DispatchOptions opt;
  opt.payload = rt.payload;
  opt.pool = ctx.pool;
  DispatchResult d = moe_dispatch(*rt.comm, *rt.placement, rt.placement_layer, xt, topk_idx, topk_weight, opt);
  const int64_t rows = d.x.dim(0), slots = int64_t(d.row_offsets.size()) - 1;
  DEEPMOE_CHECK(slots == int64_t(w.expert_gate.size()), "MoE: local slots differ from bound experts");

  // Local experts: grouped GEMMs gate/up → SwiGLU → down (unweighted; combine applies the top-k weights).
  Tensor expert_out = Tensor::zeros(DType::F32, {rows, hidden});
  if (rows > 0) {
    Scratch g(rows * inter), u(rows * inter);
    grouped_gemm(d.x.data<float>(), d.row_offsets.data(), slots, w.expert_gate.data(), g.data(), ctx.gemm, ctx.pool);
    grouped_gemm(d.x.data<float>(), d.row_offsets.data(), slots, w.expert_up.data(), u.data(), ctx.gemm, ctx.pool);
    swiglu(g.data(), u.data(), rows * inter, g.data());
    grouped_gemm(g.data(), d.row_offsets.data(), slots, w.expert_down.data(), expert_out.data<float>(), ctx.gemm,
                 ctx.pool);
  }
  // Combine: y[t] = Σ_j w[t,j] · expert(t, j) in j order.
  Tensor y = moe_combine(*rt.comm, d.handle, expert_out);

  if (w.has_shared) {
    mlp_forward(ctx, w.shared, x, T, out);  // z = shared_experts(x)
    const float* yr = y.data<float>();
    for (int64_t i = 0; i < T * hidden; ++i) out[i] = yr[i] + out[i];  // model.py: y + z
  } else {
    const float* yr = y.data<float>();
    for (int64_t i = 0; i < T * hidden; ++i) out[i] = yr[i];
  }
  (void)E;
}

}  // namespace deepmoe
