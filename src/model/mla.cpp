#include "model/mla.h"

#include <algorithm>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/attention.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "model/config.h"

namespace deepmoe {
namespace {

// Per head h: dst[:, h, :] = src[:, h, :] · w[h]ᵀ with w[h] an [n, k] matrix. src is [T, H, src_dim] of which the
// k values at src_col are used; dst is [T, H, dst_dim]. All heads go through one grouped GEMM (one group per head):
// at decode each head is a tiny product, and a call per head cost more in dispatch than in arithmetic.
void per_head_linear(const ForwardContext& ctx, const float* src, int64_t src_dim, int64_t src_col, int64_t T,
                     int64_t H, const std::vector<WeightMatrix>& w, float* dst, int64_t dst_dim) {
  const int64_t n = w[0].n, k = w[0].k;
  Scratch a(H * T * k), c(H * T * n);  // [H][T][k], [H][T][n]
  // A decode step's copies are a few KB: heads go to other threads only in groups worth a pool round trip.
  parallel_for(ctx.pool, H, [&](int64_t h0, int64_t h1) {
    for (int64_t h = h0; h < h1; ++h)
      for (int64_t t = 0; t < T; ++t)
        std::copy_n(src + (t * H + h) * src_dim + src_col, k, a.data() + (h * T + t) * k);
  }, copy_grain(T * k));
  std::vector<int64_t> offsets(size_t(H) + 1);
  for (int64_t h = 0; h <= H; ++h) offsets[size_t(h)] = h * T;
  grouped_gemm(a.data(), offsets.data(), H, w.data(), c.data(), ctx.gemm, ctx.pool);
  parallel_for(ctx.pool, H, [&](int64_t h0, int64_t h1) {
    for (int64_t h = h0; h < h1; ++h)
      for (int64_t t = 0; t < T; ++t) std::copy_n(c.data() + (h * T + t) * n, n, dst + (t * H + h) * dst_dim);
  }, copy_grain(T * n));
}

std::vector<int64_t> causal_visible(const SequenceSlice& s) {
  std::vector<int64_t> v(static_cast<size_t>(s.count));
  for (int64_t i = 0; i < s.count; ++i) v[size_t(i)] = s.start + i + 1;
  return v;
}

}  // namespace

void mla_forward(const ForwardContext& ctx, const AttentionWeights& w, const float* x, int64_t T,
                 const int64_t* positions, const std::vector<SequenceSlice>& slices, float* out) {
  const ModelConfig& c = *ctx.config;
  const int64_t H = c.num_attention_heads, nope = c.qk_nope_head_dim, R = c.qk_rope_head_dim, qk = nope + R,
                V = c.v_head_dim, C = c.kv_lora_rank;
  if (T == 0) return;
  // q = wq_b(q_norm(wq_a(x))) or wq(x): [T, H, qk]
  Scratch q(T * H * qk);
  if (c.q_lora_rank > 0) {
    Scratch qa(T * c.q_lora_rank);  // [T, q_lora_rank]
    linear(ctx, x, T, w.q_a, qa.data());
    rmsnorm(qa.data(), c.q_lora_rank, w.q_a_norm.data(), T, c.q_lora_rank, ctx.rms_eps, qa.data(), c.q_lora_rank,
            ctx.pool);
    linear(ctx, qa.data(), T, w.q_b, q.data());
  } else {
    linear(ctx, x, T, w.q, q.data());
  }
  // kv = wkv_a(x): [T, C + R] → [kv_norm(latent) | rope(k_pe)], exactly the cache row.
  Scratch kv(T * (C + R));
  linear(ctx, x, T, w.kv_a, kv.data());
  rmsnorm(kv.data(), C + R, w.kv_a_norm.data(), T, C, ctx.rms_eps, kv.data(), C + R, ctx.pool);
  apply_rope(kv.data() + C, T, C + R, 1, positions, ctx.rope_freqs, ctx.rope_amplitude);
  apply_rope(q.data() + nope, T * H, qk, H, positions, ctx.rope_freqs, ctx.rope_amplitude);  // q_pe [T, H, R]
  for (const SequenceSlice& s : slices)
    s.cache->write(s.cache_layer, s.start, s.count, kv.data() + s.offset * (C + R));

  Scratch o(T * H * V);  // [T, H, v]
  if (ctx.attention == AttentionMode::Absorbed) {
    // q_nope' = q_nope · W_UK (einsum "shd,hdc->shc"): [T, H, C]; q_pe gathered to [T, H, R].
    Scratch q_lat(T * H * C), q_pe(T * H * R), o_lat(T * H * C);
    per_head_linear(ctx, q.data(), qk, 0, T, H, w.w_uk_t, q_lat.data(), C);
    for (int64_t r = 0; r < T * H; ++r)
      for (int64_t j = 0; j < R; ++j) q_pe[size_t(r * R + j)] = q[size_t(r * qk + nope + j)];
    for (const SequenceSlice& s : slices) {
      std::vector<int64_t> visible = causal_visible(s);
      AbsorbedAttentionArgs a;
      a.q_latent = q_lat.data() + s.offset * H * C;
      a.q_rope = q_pe.data() + s.offset * H * R;
      const CacheRowView view = s.cache->layer_view(s.cache_layer);  // paged: block addresses, rows per block
      a.cache_blocks = view.blocks;
      a.block_rows = view.block_rows;
      a.cache_dtype = s.cache->dtype();
      a.cache_row = view.row;
      a.out = o_lat.data() + s.offset * H * C;
      a.n_queries = s.count;
      a.n_context = s.start + s.count;
      a.n_heads = int(H);
      a.latent_dim = int(C);
      a.rope_dim = int(R);
      a.n_visible = visible.data();
      a.scale = ctx.softmax_scale;
      attention_absorbed(a, ctx.pool);
    }
    // o = o_lat · W_UVᵀ (einsum "shc,hdc->shd"): [T, H, v]
    per_head_linear(ctx, o_lat.data(), C, 0, T, H, w.w_uv, o.data(), V);
  } else {
    for (const SequenceSlice& s : slices) {
      const int64_t n_ctx = s.start + s.count;
      // Decompress the whole context from the cache: kv_b(latent) → [n_ctx, H, nope + v].
      Scratch rows(n_ctx * (C + R)), latent(n_ctx * C), kvb(n_ctx * H * (nope + V));
      const CacheRowView view = s.cache->layer_view(s.cache_layer);
      for (int64_t t0 = 0; t0 < n_ctx; t0 += view.block_rows)  // block by block: [n_ctx, C + R] in FP32
        convert_to_f32(s.cache->dtype(), view.blocks[t0 / view.block_rows], rows.data() + t0 * (C + R),
                       size_t(std::min(view.block_rows, n_ctx - t0) * (C + R)));
      for (int64_t t = 0; t < n_ctx; ++t)
        for (int64_t j = 0; j < C; ++j) latent[size_t(t * C + j)] = rows[size_t(t * (C + R) + j)];
      linear(ctx, latent.data(), n_ctx, w.kv_b, kvb.data());
      Scratch k(n_ctx * H * qk), v(n_ctx * H * V);
      for (int64_t t = 0; t < n_ctx; ++t)
        for (int64_t h = 0; h < H; ++h) {
          const float* src = kvb.data() + (t * H + h) * (nope + V);
          float* kd = k.data() + (t * H + h) * qk;
          for (int64_t j = 0; j < nope; ++j) kd[j] = src[j];
          for (int64_t j = 0; j < R; ++j) kd[nope + j] = rows[size_t(t * (C + R) + C + j)];  // k_pe shared by heads
          for (int64_t j = 0; j < V; ++j) v[size_t((t * H + h) * V + j)] = src[nope + j];
        }
      std::vector<int64_t> visible = causal_visible(s);
      NaiveAttentionArgs a;
      a.q = q.data() + s.offset * H * qk;
      a.k = k.data();
      a.v = v.data();
      a.out = o.data() + s.offset * H * V;
      a.n_queries = s.count;
      a.n_context = n_ctx;
      a.n_heads = int(H);
      a.qk_dim = int(qk);
      a.v_dim = int(V);
      a.n_visible = visible.data();
      a.scale = ctx.softmax_scale;
      attention_naive(a, ctx.pool);
    }
  }
  linear(ctx, o.data(), T, w.o, out);  // wo(o.flatten): [T, hidden]
}

}  // namespace deepmoe
