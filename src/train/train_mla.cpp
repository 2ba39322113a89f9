// MLA forward and backward for training (reference §1.5, the naive form model.py also offers): the inference
// engine runs the absorbed form over the same weights, which is the same function up to FP32 rounding.
#include <algorithm>
#include <cmath>
#include <limits>

#include "core/thread_pool.h"
#include "kernels/rope.h"
#include "train/temp_buffer.h"
#include "train/train_layers.h"

namespace deepmoe {

LayerContext::LayerContext(const ModelConfig& c) : cfg(&c) {
  const RopeParams rp = rope_params(c);
  rope_freqs = rope_frequencies(rp);
  rope_amplitude = deepmoe::rope_amplitude(rp);
  softmax_scale = attention_softmax_scale(rp, int(c.qk_head_dim()));
  eps = c.rms_norm_eps;
}

void LayerContext::set_shape(int64_t b, int64_t t) {
  B = b;
  T = t;
  positions.resize(static_cast<size_t>(b * t));
  for (int64_t i = 0; i < b * t; ++i) positions[size_t(i)] = i % t;
}

std::string layer_prefix(int64_t layer) { return "model.layers." + std::to_string(layer) + "."; }

namespace {

struct MlaDims {
  int64_t N, B, T, D, H, nope, R, qk, V, C, QL;
  MlaDims(const LayerContext& ctx) {
    const ModelConfig& c = *ctx.cfg;
    N = ctx.N(), B = ctx.B, T = ctx.T, D = c.hidden_size, H = c.num_attention_heads, nope = c.qk_nope_head_dim,
    R = c.qk_rope_head_dim, qk = nope + R, V = c.v_head_dim, C = c.kv_lora_rank, QL = c.q_lora_rank;
  }
};

// Q [T, qk], K [T, qk], V [T, v] of sequence b, head h.
template <class R>
void gather_head(const MlaDims& d, const MlaCache<R>& c, int64_t b, int64_t h, R* Q, R* K, R* Vh) {
  for (int64_t t = 0; t < d.T; ++t) {
    const int64_t row = b * d.T + t;
    std::copy_n(c.q.data() + (row * d.H + h) * d.qk, d.qk, Q + t * d.qk);
    const R* kv = c.kvb.data() + (row * d.H + h) * (d.nope + d.V);
    std::copy_n(kv, d.nope, K + t * d.qk);
    std::copy_n(c.kpe.data() + row * d.R, d.R, K + t * d.qk + d.nope);
    std::copy_n(kv + d.nope, d.V, Vh + t * d.V);
  }
}

}  // namespace

template <class R>
void mla_forward(const LayerContext& ctx, const ParamStore<R>& ps, const std::string& prefix, const R* x, R* out,
                 MlaCache<R>& c) {
  const MlaDims d(ctx);
  const std::string p = prefix + "self_attn.";
  const Precision prec = ctx.precision;
  c.x.assign(x, x + d.N * d.D);
  c.q.resize(size_t(d.N * d.H * d.qk));
  if (d.QL > 0) {
    c.qa.resize(size_t(d.N * d.QL));
    c.qa_n.resize(c.qa.size());
    c.qa_rstd.resize(size_t(d.N));
    linear_forward(x, d.N, ps.at(p + "q_a_proj.weight").value.data(), d.QL, d.D, c.qa.data(), prec, ctx.pool);
    rmsnorm_forward(c.qa.data(), d.QL, d.N, d.QL, ps.at(p + "q_a_layernorm.weight").value.data(), ctx.eps,
                    c.qa_n.data(), d.QL, c.qa_rstd.data());
    linear_forward(c.qa_n.data(), d.N, ps.at(p + "q_b_proj.weight").value.data(), d.H * d.qk, d.QL, c.q.data(), prec,
                   ctx.pool);
  } else {
    linear_forward(x, d.N, ps.at(p + "q_proj.weight").value.data(), d.H * d.qk, d.D, c.q.data(), prec, ctx.pool);
  }
  rope_rotate(c.q.data() + d.nope, d.N * d.H, d.qk, d.H, ctx.positions.data(), ctx.rope_freqs, ctx.rope_amplitude,
              false);
  // kv = wkv_a(x) → [kv_norm(latent) | rope(k_pe)]
  c.kva.resize(size_t(d.N * (d.C + d.R)));
  linear_forward(x, d.N, ps.at(p + "kv_a_proj_with_mqa.weight").value.data(), d.C + d.R, d.D, c.kva.data(), prec,
                 ctx.pool);
  c.lat_n.resize(size_t(d.N * d.C));
  c.kv_rstd.resize(size_t(d.N));
  rmsnorm_forward(c.kva.data(), d.C + d.R, d.N, d.C, ps.at(p + "kv_a_layernorm.weight").value.data(), ctx.eps,
                  c.lat_n.data(), d.C, c.kv_rstd.data());
  c.kpe.resize(size_t(d.N * d.R));
  for (int64_t r = 0; r < d.N; ++r) std::copy_n(c.kva.data() + r * (d.C + d.R) + d.C, d.R, c.kpe.data() + r * d.R);
  rope_rotate(c.kpe.data(), d.N, d.R, 1, ctx.positions.data(), ctx.rope_freqs, ctx.rope_amplitude, false);
  c.kvb.resize(size_t(d.N * d.H * (d.nope + d.V)));
  linear_forward(c.lat_n.data(), d.N, ps.at(p + "kv_b_proj.weight").value.data(), d.H * (d.nope + d.V), d.C,
                 c.kvb.data(), prec, ctx.pool);

  // Attention core in full precision, one (sequence, head) per task: S = Q Kᵀ · scale, causal softmax, O = P V.
  c.p.resize(size_t(d.B * d.H * d.T * d.T));
  c.o.resize(size_t(d.N * d.H * d.V));
  parallel_for_balanced(ctx.pool, d.B * d.H, [&](int64_t item, int) {
    const int64_t b = item / d.H, h = item % d.H;
    TempBuffer<R> Q(d.T * d.qk), K(d.T * d.qk), Vh(d.T * d.V), Vt(d.V * d.T), O(d.T * d.V);
    gather_head(d, c, b, h, Q.data(), K.data(), Vh.data());
    R* P = c.p.data() + item * d.T * d.T;
    matmul_nt(Q.data(), d.T, d.qk, K.data(), d.T, P, nullptr);
    for (int64_t i = 0; i < d.T; ++i) {
      R* row = P + i * d.T;
      R mx = -std::numeric_limits<R>::infinity();
      for (int64_t j = 0; j <= i; ++j) mx = std::max(mx, row[j] * R(ctx.softmax_scale));
      R sum = 0;
      for (int64_t j = 0; j <= i; ++j) sum += (row[j] = std::exp(row[j] * R(ctx.softmax_scale) - mx));
      for (int64_t j = 0; j <= i; ++j) row[j] /= sum;
      for (int64_t j = i + 1; j < d.T; ++j) row[j] = 0;
    }
    transpose(Vh.data(), d.T, d.V, Vt.data());
    matmul_nt(P, d.T, d.T, Vt.data(), d.V, O.data(), nullptr);
    for (int64_t t = 0; t < d.T; ++t) std::copy_n(O.data() + t * d.V, d.V, c.o.data() + ((b * d.T + t) * d.H + h) * d.V);
  });
  linear_forward(c.o.data(), d.N, ps.at(p + "o_proj.weight").value.data(), d.D, d.H * d.V, out, prec, ctx.pool);
}

template <class R>
void mla_backward(const LayerContext& ctx, ParamStore<R>& ps, const std::string& prefix, const MlaCache<R>& c,
                  const R* dout, R* dx) {
  const MlaDims d(ctx);
  const std::string p = prefix + "self_attn.";
  const Precision prec = ctx.precision;
  auto& wo = ps.at(p + "o_proj.weight");
  std::vector<R> d_o(size_t(d.N * d.H * d.V), R(0));
  linear_backward(c.o.data(), d.N, wo.value.data(), d.D, d.H * d.V, dout, d_o.data(), wo.grad.data(), prec, ctx.pool);

  std::vector<R> dq(size_t(d.N * d.H * d.qk)), dkvb(size_t(d.N * d.H * (d.nope + d.V)));
  std::vector<R> dkpe_heads(size_t(d.H * d.N * d.R));  // per head, summed in head order below (determinism)
  parallel_for_balanced(ctx.pool, d.B * d.H, [&](int64_t item, int) {
    const int64_t b = item / d.H, h = item % d.H;
    const int64_t T = d.T;
    TempBuffer<R> Q(T * d.qk), K(T * d.qk), Vh(T * d.V), dO(T * d.V), dOt(d.V * T), dP(T * T), Pt(T * T), dV(T * d.V),
        dSt(T * T), Kt(d.qk * T), Qt(d.qk * T), dQ(T * d.qk), dK(T * d.qk);
    gather_head(d, c, b, h, Q.data(), K.data(), Vh.data());
    for (int64_t t = 0; t < d.T; ++t)
      std::copy_n(d_o.data() + ((b * d.T + t) * d.H + h) * d.V, d.V, dO.data() + t * d.V);
    const R* P = c.p.data() + item * d.T * d.T;
    matmul_nt(dO.data(), d.T, d.V, Vh.data(), d.T, dP.data(), nullptr);  // dP = dO Vᵀ
    transpose(P, d.T, d.T, Pt.data());
    transpose(dO.data(), d.T, d.V, dOt.data());
    matmul_nt(Pt.data(), d.T, d.T, dOt.data(), d.V, dV.data(), nullptr);  // dV = Pᵀ dO
    // dS = P ⊙ (dP − Σ_j P dP) · scale (row softmax backward), kept in dP.
    for (int64_t i = 0; i < d.T; ++i) {
      R* g = dP.data() + i * d.T;
      const R* pr = P + i * d.T;
      R dot = 0;
      for (int64_t j = 0; j <= i; ++j) dot += pr[j] * g[j];
      for (int64_t j = 0; j < d.T; ++j) g[j] = j <= i ? pr[j] * (g[j] - dot) * R(ctx.softmax_scale) : R(0);
    }
    transpose(K.data(), d.T, d.qk, Kt.data());
    matmul_nt(dP.data(), d.T, d.T, Kt.data(), d.qk, dQ.data(), nullptr);  // dQ = dS K
    transpose(dP.data(), d.T, d.T, dSt.data());
    transpose(Q.data(), d.T, d.qk, Qt.data());
    matmul_nt(dSt.data(), d.T, d.T, Qt.data(), d.qk, dK.data(), nullptr);  // dK = dSᵀ Q
    for (int64_t t = 0; t < d.T; ++t) {
      const int64_t row = b * d.T + t;
      std::copy_n(dQ.data() + t * d.qk, d.qk, dq.data() + (row * d.H + h) * d.qk);
      R* kv = dkvb.data() + (row * d.H + h) * (d.nope + d.V);
      std::copy_n(dK.data() + t * d.qk, d.nope, kv);
      std::copy_n(dV.data() + t * d.V, d.V, kv + d.nope);
      std::copy_n(dK.data() + t * d.qk + d.nope, d.R, dkpe_heads.data() + (h * d.N + row) * d.R);
    }
  });

  // kv side: kv_b, kv_norm, rope(k_pe), kv_a.
  auto& wkvb = ps.at(p + "kv_b_proj.weight");
  std::vector<R> dlat(size_t(d.N * d.C), R(0)), dkva(size_t(d.N * (d.C + d.R)), R(0));
  linear_backward(c.lat_n.data(), d.N, wkvb.value.data(), d.H * (d.nope + d.V), d.C, dkvb.data(), dlat.data(),
                  wkvb.grad.data(), prec, ctx.pool);
  auto& kvn = ps.at(p + "kv_a_layernorm.weight");
  rmsnorm_backward(c.kva.data(), d.C + d.R, d.N, d.C, kvn.value.data(), c.kv_rstd.data(), dlat.data(), d.C,
                   dkva.data(), d.C + d.R, kvn.grad.data());
  std::vector<R> dkpe(size_t(d.N * d.R), R(0));
  for (int64_t h = 0; h < d.H; ++h)
    for (int64_t i = 0; i < d.N * d.R; ++i) dkpe[size_t(i)] += dkpe_heads[size_t(h * d.N * d.R + i)];
  rope_rotate(dkpe.data(), d.N, d.R, 1, ctx.positions.data(), ctx.rope_freqs, ctx.rope_amplitude, true);
  for (int64_t r = 0; r < d.N; ++r)
    for (int64_t j = 0; j < d.R; ++j) dkva[size_t(r * (d.C + d.R) + d.C + j)] += dkpe[size_t(r * d.R + j)];
  auto& wkva = ps.at(p + "kv_a_proj_with_mqa.weight");
  linear_backward(c.x.data(), d.N, wkva.value.data(), d.C + d.R, d.D, dkva.data(), dx, wkva.grad.data(), prec,
                  ctx.pool);

  // q side.
  rope_rotate(dq.data() + d.nope, d.N * d.H, d.qk, d.H, ctx.positions.data(), ctx.rope_freqs, ctx.rope_amplitude,
              true);
  if (d.QL > 0) {
    auto& wqb = ps.at(p + "q_b_proj.weight");
    std::vector<R> dqa_n(size_t(d.N * d.QL), R(0)), dqa(size_t(d.N * d.QL), R(0));
    linear_backward(c.qa_n.data(), d.N, wqb.value.data(), d.H * d.qk, d.QL, dq.data(), dqa_n.data(), wqb.grad.data(),
                    prec, ctx.pool);
    auto& qn = ps.at(p + "q_a_layernorm.weight");
    rmsnorm_backward(c.qa.data(), d.QL, d.N, d.QL, qn.value.data(), c.qa_rstd.data(), dqa_n.data(), d.QL, dqa.data(),
                     d.QL, qn.grad.data());
    auto& wqa = ps.at(p + "q_a_proj.weight");
    linear_backward(c.x.data(), d.N, wqa.value.data(), d.QL, d.D, dqa.data(), dx, wqa.grad.data(), prec, ctx.pool);
  } else {
    auto& wq = ps.at(p + "q_proj.weight");
    linear_backward(c.x.data(), d.N, wq.value.data(), d.H * d.qk, d.D, dq.data(), dx, wq.grad.data(), prec, ctx.pool);
  }
}

template void mla_forward<float>(const LayerContext&, const ParamStore<float>&, const std::string&, const float*,
                                 float*, MlaCache<float>&);
template void mla_forward<double>(const LayerContext&, const ParamStore<double>&, const std::string&, const double*,
                                  double*, MlaCache<double>&);
template void mla_backward<float>(const LayerContext&, ParamStore<float>&, const std::string&,
                                  const MlaCache<float>&, const float*, float*);
template void mla_backward<double>(const LayerContext&, ParamStore<double>&, const std::string&,
                                   const MlaCache<double>&, const double*, double*);

}  // namespace deepmoe
