// Dense MLP and DeepSeekMoE for training. The gate (reference §1.6) selects with the correction bias and
// weights with the unbiased sigmoid scores, so gradients flow through the selected scores only; the bias is
// moved by the auxiliary-loss-free rule in the trainer, never by gradients (paper §2.1.2).
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/thread_pool.h"
#include "train/train_layers.h"

namespace deepmoe {

template <class R>
void mlp_forward(const R* x, int64_t rows, const R* w1, const R* w3, const R* w2, int64_t hidden, int64_t inter,
                 R* out, MlpCache<R>& c, Precision precision, ThreadPool* pool) {
  c.rows = rows;
  c.x.assign(x, x + rows * hidden);
  c.g.resize(size_t(rows * inter));
  c.u.resize(c.g.size());
  c.a.resize(c.g.size());
  linear_forward(x, rows, w1, inter, hidden, c.g.data(), precision, pool);
  linear_forward(x, rows, w3, inter, hidden, c.u.data(), precision, pool);
  swiglu_forward(c.g.data(), c.u.data(), rows * inter, c.a.data());
  linear_forward(c.a.data(), rows, w2, hidden, inter, out, precision, pool);
}

template <class R>
void mlp_backward(const MlpCache<R>& c, const R* w1, const R* w3, const R* w2, int64_t hidden, int64_t inter,
                  const R* dout, R* dx, R* dw1, R* dw3, R* dw2, Precision precision, ThreadPool* pool) {
  const int64_t rows = c.rows;
  if (rows == 0) return;
  std::vector<R> da(size_t(rows * inter), R(0)), dg(da.size(), R(0)), du(da.size(), R(0));
  linear_backward(c.a.data(), rows, w2, hidden, inter, dout, da.data(), dw2, precision, pool);
  swiglu_backward(c.g.data(), c.u.data(), da.data(), rows * inter, dg.data(), du.data());
  linear_backward(c.x.data(), rows, w1, inter, hidden, dg.data(), dx, dw1, precision, pool);
  linear_backward(c.x.data(), rows, w3, inter, hidden, du.data(), dx, dw3, precision, pool);
}

namespace {

// The k largest of v[0..n): value descending, lower index first on ties (kernels/topk.h order).
template <class R>
void top_indices(const R* v, int n, int k, int* out) {
  std::vector<int> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int a, int b) {
    return v[a] > v[b] || (v[a] == v[b] && a < b);
  });
  std::copy_n(idx.begin(), k, out);
}

// Group-limited top-k of model.py's Gate for one token: scores s (sigmoid), bias for selection only.
template <class R>
void select_experts(const ModelConfig& c, const R* s, const float* bias, int32_t* chosen) {
  const int E = int(c.n_routed_experts), K = int(c.num_experts_per_tok), G = int(c.n_group);
  std::vector<R> choice(static_cast<size_t>(E));
  for (int e = 0; e < E; ++e) choice[size_t(e)] = s[e] + (bias ? R(bias[e]) : R(0));
  if (G > 1) {
    const int per = E / G;
    std::vector<R> gscore(static_cast<size_t>(G));
    for (int g = 0; g < G; ++g) {
      int top[2];
      const int n_top = std::min(2, per);
      top_indices(choice.data() + g * per, per, n_top, top);
      gscore[size_t(g)] = choice[size_t(g * per + top[0])] + (n_top == 2 ? choice[size_t(g * per + top[1])] : R(0));
    }
    std::vector<int> keep(static_cast<size_t>(c.topk_group));
    top_indices(gscore.data(), G, int(c.topk_group), keep.data());
    std::vector<bool> kept(static_cast<size_t>(G), false);
    for (int g : keep) kept[size_t(g)] = true;
    for (int g = 0; g < G; ++g)
      if (!kept[size_t(g)])
        for (int j = 0; j < per; ++j) choice[size_t(g * per + j)] = -std::numeric_limits<R>::infinity();
  }
  std::vector<int> top(static_cast<size_t>(K));
  top_indices(choice.data(), E, K, top.data());
  for (int i = 0; i < K; ++i) chosen[i] = top[size_t(i)];
}

template <class R>
struct ExpertRefs {
  const Param<R>*w1, *w3, *w2;
};

}  // namespace

template <class R>
void moe_forward(const LayerContext& ctx, const ParamStore<R>& ps, const std::string& prefix, const R* x, R* out,
                 MoeCache<R>& c) {
  const ModelConfig& cfg = *ctx.cfg;
  const int64_t N = ctx.N(), D = cfg.hidden_size, E = cfg.n_routed_experts, K = cfg.num_experts_per_tok,
                I = cfg.moe_intermediate_size;
  const std::string p = prefix + "mlp.";
  c.x.assign(x, x + N * D);
  // Gate in full precision: s = sigmoid(x Gᵀ).
  c.s.resize(size_t(N * E));
  matmul_nt(x, N, D, ps.at(p + "gate.weight").value.data(), E, c.s.data(), ctx.pool);
  for (auto& v : c.s) v = R(1) / (R(1) + std::exp(-v));
  std::vector<float> bias;
  if (cfg.has_correction_bias()) {
    const auto& b = ps.at(p + "gate.e_score_correction_bias").value;
    bias.assign(b.begin(), b.end());
  }
  c.topk.resize(size_t(N * K));
  c.weight.resize(size_t(N * K));
  c.rows_of.assign(size_t(E), {});
  c.slot_of.assign(size_t(E), {});
  c.load.assign(size_t(E), 0);
  for (int64_t r = 0; r < N; ++r) {
    const R* s = c.s.data() + r * E;
    int32_t* chosen = c.topk.data() + r * K;
    select_experts(cfg, s, bias.empty() ? nullptr : bias.data(), chosen);
    R sum = 0;
    for (int64_t i = 0; i < K; ++i) sum += s[chosen[i]];
    for (int64_t i = 0; i < K; ++i) {
      R w = s[chosen[i]];
      if (cfg.norm_topk_prob) w /= (sum + R(1e-20));
      c.weight[size_t(r * K + i)] = w * R(cfg.routed_scaling_factor);
      c.rows_of[size_t(chosen[i])].push_back(r);
      c.slot_of[size_t(chosen[i])].push_back(int32_t(i));
      ++c.load[size_t(chosen[i])];
    }
  }
  // Sequence-wise balance loss α Σ_i f_i P_i per sequence, averaged over the sequences (paper §2.1.2).
  c.balance_loss = 0;
  if (ctx.balance_alpha > 0) {
    for (int64_t b = 0; b < ctx.B; ++b) {
      std::vector<double> f(size_t(E), 0.0), P(size_t(E), 0.0);
      for (int64_t t = 0; t < ctx.T; ++t) {
        const int64_t r = b * ctx.T + t;
        for (int64_t i = 0; i < K; ++i) f[size_t(c.topk[size_t(r * K + i)])] += double(E) / double(K * ctx.T);
        const R* s = c.s.data() + r * E;
        double total = 0;
        for (int64_t e = 0; e < E; ++e) total += double(s[e]);
        for (int64_t e = 0; e < E; ++e) P[size_t(e)] += double(s[e]) / total / double(ctx.T);
      }
      for (int64_t e = 0; e < E; ++e) c.balance_loss += ctx.balance_alpha * f[size_t(e)] * P[size_t(e)] / double(ctx.B);
    }
  }

  // Routed experts, one per task (each expert's GEMMs on one thread; experts write their own buffers).
  c.experts.assign(size_t(E), {});
  c.y.assign(size_t(E), {});
  std::vector<ExpertRefs<R>> refs(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) {
    const std::string q = p + "experts." + std::to_string(e) + ".";
    refs[size_t(e)] = {&ps.at(q + "gate_proj.weight"), &ps.at(q + "up_proj.weight"), &ps.at(q + "down_proj.weight")};
  }
  parallel_for_balanced(ctx.pool, E, [&](int64_t e, int) {
    const auto& rows = c.rows_of[size_t(e)];
    const int64_t n = int64_t(rows.size());
    std::vector<R> xe(size_t(n * D));
    for (int64_t i = 0; i < n; ++i) std::copy_n(x + rows[size_t(i)] * D, D, xe.data() + i * D);
    c.y[size_t(e)].resize(size_t(n * D));
    mlp_forward(xe.data(), n, refs[size_t(e)].w1->value.data(), refs[size_t(e)].w3->value.data(),
                refs[size_t(e)].w2->value.data(), D, I, c.y[size_t(e)].data(), c.experts[size_t(e)], ctx.precision,
                nullptr);
  });
  // out = shared(x) + Σ_k w_k · expert_k(x), experts added in index order (deterministic).
  if (cfg.n_shared_experts > 0) {
    const int64_t SI = cfg.n_shared_experts * I;
    mlp_forward(x, N, ps.at(p + "shared_experts.gate_proj.weight").value.data(),
                ps.at(p + "shared_experts.up_proj.weight").value.data(),
                ps.at(p + "shared_experts.down_proj.weight").value.data(), D, SI, out, c.shared, ctx.precision,
                ctx.pool);
  } else {
    std::fill(out, out + N * D, R(0));
  }
  for (int64_t e = 0; e < E; ++e) {
    const auto& rows = c.rows_of[size_t(e)];
    for (size_t i = 0; i < rows.size(); ++i) {
      const R w = c.weight[size_t(rows[i] * K + c.slot_of[size_t(e)][i])];
      const R* y = c.y[size_t(e)].data() + int64_t(i) * D;
      R* o = out + rows[i] * D;
      for (int64_t j = 0; j < D; ++j) o[j] += w * y[j];
    }
  }
}

template <class R>
void moe_backward(const LayerContext& ctx, ParamStore<R>& ps, const std::string& prefix, const MoeCache<R>& c,
                  const R* dout, R* dx) {
  const ModelConfig& cfg = *ctx.cfg;
  const int64_t N = ctx.N(), D = cfg.hidden_size, E = cfg.n_routed_experts, K = cfg.num_experts_per_tok,
                I = cfg.moe_intermediate_size;
  const std::string p = prefix + "mlp.";
  if (cfg.n_shared_experts > 0) {
    auto &w1 = ps.at(p + "shared_experts.gate_proj.weight"), &w3 = ps.at(p + "shared_experts.up_proj.weight"),
         &w2 = ps.at(p + "shared_experts.down_proj.weight");
    mlp_backward(c.shared, w1.value.data(), w3.value.data(), w2.value.data(), D, cfg.n_shared_experts * I, dout, dx,
                 w1.grad.data(), w3.grad.data(), w2.grad.data(), ctx.precision, ctx.pool);
  }
  // Routed experts: d(expert out) = w · dout; d(w) = <dout, expert out>.
  std::vector<R> dweight(size_t(N * K), R(0));
  std::vector<std::vector<R>> dxe(static_cast<size_t>(E));
  std::vector<Param<R>*> w1(static_cast<size_t>(E)), w3(static_cast<size_t>(E)), w2(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) {
    const std::string q = p + "experts." + std::to_string(e) + ".";
    w1[size_t(e)] = &ps.at(q + "gate_proj.weight");
    w3[size_t(e)] = &ps.at(q + "up_proj.weight");
    w2[size_t(e)] = &ps.at(q + "down_proj.weight");
  }
  parallel_for_balanced(ctx.pool, E, [&](int64_t e, int) {
    const auto& rows = c.rows_of[size_t(e)];
    const int64_t n = int64_t(rows.size());
    if (n == 0) return;
    std::vector<R> dy(size_t(n * D));
    for (int64_t i = 0; i < n; ++i) {
      const int64_t slot = rows[size_t(i)] * K + c.slot_of[size_t(e)][size_t(i)];
      const R w = c.weight[size_t(slot)];
      const R* g = dout + rows[size_t(i)] * D;
      const R* y = c.y[size_t(e)].data() + i * D;
      R dot = 0;
      for (int64_t j = 0; j < D; ++j) {
        dy[size_t(i * D + j)] = w * g[j];
        dot += g[j] * y[j];
      }
      dweight[size_t(slot)] = dot;  // each (row, slot) belongs to exactly one expert
    }
    dxe[size_t(e)].assign(size_t(n * D), R(0));
    mlp_backward(c.experts[size_t(e)], w1[size_t(e)]->value.data(), w3[size_t(e)]->value.data(),
                 w2[size_t(e)]->value.data(), D, I, dy.data(), dxe[size_t(e)].data(), w1[size_t(e)]->grad.data(),
                 w3[size_t(e)]->grad.data(), w2[size_t(e)]->grad.data(), ctx.precision, nullptr);
  });
  for (int64_t e = 0; e < E; ++e) {
    const auto& rows = c.rows_of[size_t(e)];
    for (size_t i = 0; i < rows.size(); ++i)
      for (int64_t j = 0; j < D; ++j) dx[rows[i] * D + j] += dxe[size_t(e)][i * size_t(D) + size_t(j)];
  }
  // Gate: w_k = scale · s_k / Σ_sel s (or scale · s_k), then s = sigmoid(logit).
  std::vector<R> dlogit(size_t(N * E), R(0));
  const R scale = R(cfg.routed_scaling_factor);
  for (int64_t r = 0; r < N; ++r) {
    const R* s = c.s.data() + r * E;
    const int32_t* chosen = c.topk.data() + r * K;
    const R* dw = dweight.data() + r * K;
    R* ds = dlogit.data() + r * E;  // holds d/ds first, turned into d/dlogit below
    if (cfg.norm_topk_prob) {
      R sum = 0, dot = 0;
      for (int64_t i = 0; i < K; ++i) sum += s[chosen[i]];
      const R denom = sum + R(1e-20);
      for (int64_t i = 0; i < K; ++i) dot += dw[i] * s[chosen[i]];
      for (int64_t i = 0; i < K; ++i) ds[chosen[i]] += scale * (dw[i] / denom - dot / (denom * denom));
    } else {
      for (int64_t i = 0; i < K; ++i) ds[chosen[i]] += scale * dw[i];
    }
  }
  if (ctx.balance_alpha > 0) {
    // L = α/B Σ_b Σ_i f_i P_i, P_i = 1/T Σ_t s_i,t / Σ_j s_j,t: dL/ds_j,t = α f_j / (B T Σ) − α Σ_i f_i s_i,t / (B T Σ²)
    for (int64_t b = 0; b < ctx.B; ++b) {
      std::vector<double> f(size_t(E), 0.0);
      for (int64_t t = 0; t < ctx.T; ++t)
        for (int64_t i = 0; i < K; ++i)
          f[size_t(c.topk[size_t((b * ctx.T + t) * K + i)])] += double(E) / double(K * ctx.T);
      const double coef = ctx.balance_alpha / double(ctx.B * ctx.T);
      for (int64_t t = 0; t < ctx.T; ++t) {
        const int64_t r = b * ctx.T + t;
        const R* s = c.s.data() + r * E;
        double total = 0, fs = 0;
        for (int64_t e = 0; e < E; ++e) total += double(s[e]), fs += f[size_t(e)] * double(s[e]);
        for (int64_t e = 0; e < E; ++e)
          dlogit[size_t(r * E + e)] += R(coef * (f[size_t(e)] / total - fs / (total * total)));
      }
    }
  }
  for (int64_t i = 0; i < N * E; ++i) dlogit[size_t(i)] *= c.s[size_t(i)] * (R(1) - c.s[size_t(i)]);
  auto& gw = ps.at(p + "gate.weight");
  linear_backward(c.x.data(), N, gw.value.data(), E, D, dlogit.data(), dx, gw.grad.data(), Precision::FP32, ctx.pool);
}

template <class R>
void block_forward(const LayerContext& ctx, const ParamStore<R>& ps, int64_t layer, R* x, BlockCache<R>& c) {
  const ModelConfig& cfg = *ctx.cfg;
  const int64_t N = ctx.N(), D = cfg.hidden_size;
  const std::string p = layer_prefix(layer);
  c.moe = cfg.is_moe_layer(layer);
  c.x_in.assign(x, x + N * D);
  c.h1.resize(size_t(N * D));
  c.rstd1.resize(static_cast<size_t>(N));
  rmsnorm_forward(x, D, N, D, ps.at(p + "input_layernorm.weight").value.data(), ctx.eps, c.h1.data(), D,
                  c.rstd1.data());
  std::vector<R> f(size_t(N * D));
  mla_forward(ctx, ps, p, c.h1.data(), f.data(), c.attn);
  for (int64_t i = 0; i < N * D; ++i) x[i] += f[size_t(i)];
  c.x_mid.assign(x, x + N * D);
  c.h2.resize(size_t(N * D));
  c.rstd2.resize(static_cast<size_t>(N));
  rmsnorm_forward(x, D, N, D, ps.at(p + "post_attention_layernorm.weight").value.data(), ctx.eps, c.h2.data(), D,
                  c.rstd2.data());
  if (c.moe) {
    moe_forward(ctx, ps, p, c.h2.data(), f.data(), c.moe_cache);
  } else {
    mlp_forward(c.h2.data(), N, ps.at(p + "mlp.gate_proj.weight").value.data(),
                ps.at(p + "mlp.up_proj.weight").value.data(), ps.at(p + "mlp.down_proj.weight").value.data(), D,
                cfg.intermediate_size, f.data(), c.mlp, ctx.precision, ctx.pool);
  }
  for (int64_t i = 0; i < N * D; ++i) x[i] += f[size_t(i)];
}

template <class R>
void block_backward(const LayerContext& ctx, ParamStore<R>& ps, int64_t layer, const BlockCache<R>& c, R* dx) {
  const ModelConfig& cfg = *ctx.cfg;
  const int64_t N = ctx.N(), D = cfg.hidden_size;
  const std::string p = layer_prefix(layer);
  std::vector<R> dh(size_t(N * D), R(0));
  if (c.moe) {
    moe_backward(ctx, ps, p, c.moe_cache, dx, dh.data());
  } else {
    auto &w1 = ps.at(p + "mlp.gate_proj.weight"), &w3 = ps.at(p + "mlp.up_proj.weight"),
         &w2 = ps.at(p + "mlp.down_proj.weight");
    mlp_backward(c.mlp, w1.value.data(), w3.value.data(), w2.value.data(), D, cfg.intermediate_size, dx, dh.data(),
                 w1.grad.data(), w3.grad.data(), w2.grad.data(), ctx.precision, ctx.pool);
  }
  auto& n2 = ps.at(p + "post_attention_layernorm.weight");
  rmsnorm_backward(c.x_mid.data(), D, N, D, n2.value.data(), c.rstd2.data(), dh.data(), D, dx, D, n2.grad.data());
  std::fill(dh.begin(), dh.end(), R(0));
  mla_backward(ctx, ps, p, c.attn, dx, dh.data());
  auto& n1 = ps.at(p + "input_layernorm.weight");
  rmsnorm_backward(c.x_in.data(), D, N, D, n1.value.data(), c.rstd1.data(), dh.data(), D, dx, D, n1.grad.data());
}

#define DEEPMOE_TRAIN_MOE(R)                                                                                         \
  template void mlp_forward<R>(const R*, int64_t, const R*, const R*, const R*, int64_t, int64_t, R*, MlpCache<R>&, \
                               Precision, ThreadPool*);                                                             \
  template void mlp_backward<R>(const MlpCache<R>&, const R*, const R*, const R*, int64_t, int64_t, const R*, R*,   \
                                R*, R*, R*, Precision, ThreadPool*);                                                \
  template void moe_forward<R>(const LayerContext&, const ParamStore<R>&, const std::string&, const R*, R*,         \
                               MoeCache<R>&);                                                                       \
  template void moe_backward<R>(const LayerContext&, ParamStore<R>&, const std::string&, const MoeCache<R>&,        \
                                const R*, R*);                                                                      \
  template void block_forward<R>(const LayerContext&, const ParamStore<R>&, int64_t, R*, BlockCache<R>&);           \
  template void block_backward<R>(const LayerContext&, ParamStore<R>&, int64_t, const BlockCache<R>&, R*);
DEEPMOE_TRAIN_MOE(float)
DEEPMOE_TRAIN_MOE(double)

}  // namespace deepmoe
