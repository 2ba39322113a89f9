// The transformer pieces of the trainer (internal to src/train): each layer's forward keeps what its hand-written
// backward needs in a cache struct. Shapes follow model.py: B sequences of T tokens flattened to N = B·T rows,
// row b·T + t at position t. Parameters are looked up by their Hugging Face names under `prefix`
// ("model.layers.3.").
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "train/param_store.h"
#include "train/train_math.h"

namespace deepmoe {

class ThreadPool;

struct LayerContext {
  const ModelConfig* cfg = nullptr;
  Precision precision = Precision::FP32;
  ThreadPool* pool = nullptr;
  std::vector<float> rope_freqs;
  float rope_amplitude = 1;
  double softmax_scale = 1;
  double eps = 1e-6;
  double balance_alpha = 0;  // sequence-wise balance loss weight (0 = off)
  int64_t B = 0, T = 0;      // sequences × tokens of the current call
  int64_t N() const { return B * T; }
  std::vector<int64_t> positions;  // [N]: t of each row

  explicit LayerContext(const ModelConfig& c);
  void set_shape(int64_t b, int64_t t);
};

// --- MLA (reference §1.5, naive form: K and V decompressed through kv_b_proj) -------------------------------------
template <class R>
struct MlaCache {
  std::vector<R> x, qa, qa_rstd, qa_n, q, kva, kv_rstd, lat_n, kpe, kvb, p, o;
};
template <class R>
void mla_forward(const LayerContext& ctx, const ParamStore<R>& ps, const std::string& prefix, const R* x, R* out,
                 MlaCache<R>& cache);
template <class R>
void mla_backward(const LayerContext& ctx, ParamStore<R>& ps, const std::string& prefix, const MlaCache<R>& cache,
                  const R* dout, R* dx);

// --- MLP: w2(silu(w1 x) · w3 x) ----------------------------------------------------------------------------------
template <class R>
struct MlpCache {
  std::vector<R> x, g, u, a;
  int64_t rows = 0;
};
// `precision` applies to the three projections; `pool` may be null (experts run one per worker).
template <class R>
void mlp_forward(const R* x, int64_t rows, const R* w1, const R* w3, const R* w2, int64_t hidden, int64_t inter,
                 R* out, MlpCache<R>& cache, Precision precision, ThreadPool* pool);
template <class R>
void mlp_backward(const MlpCache<R>& cache, const R* w1, const R* w3, const R* w2, int64_t hidden, int64_t inter,
                  const R* dout, R* dx, R* dw1, R* dw3, R* dw2, Precision precision, ThreadPool* pool);

// --- DeepSeekMoE: sigmoid gate with group-limited top-k and correction bias, routed + shared experts ---------------
template <class R>
struct MoeCache {
  std::vector<R> x, s;                  // input [N, D]; sigmoid scores [N, E]
  std::vector<int32_t> topk;            // [N, K] selected experts
  std::vector<R> weight;                // [N, K] gate values applied
  std::vector<std::vector<int64_t>> rows_of;  // per expert: rows routed to it, in row order
  std::vector<std::vector<int32_t>> slot_of;  // per expert: which of the row's K slots
  std::vector<MlpCache<R>> experts;
  std::vector<std::vector<R>> y;        // per expert: its output rows (before the gate value)
  MlpCache<R> shared;
  std::vector<int64_t> load;            // [E] tokens per expert in this call
  double balance_loss = 0;
};
template <class R>
void moe_forward(const LayerContext& ctx, const ParamStore<R>& ps, const std::string& prefix, const R* x, R* out,
                 MoeCache<R>& cache);
template <class R>
void moe_backward(const LayerContext& ctx, ParamStore<R>& ps, const std::string& prefix, const MoeCache<R>& cache,
                  const R* dout, R* dx);

// --- one transformer block: x += attn(attn_norm(x)); x += ffn(ffn_norm(x)) ---------------------------------------
template <class R>
struct BlockCache {
  bool moe = false;
  std::vector<R> x_in, h1, rstd1, x_mid, h2, rstd2;
  MlaCache<R> attn;
  MlpCache<R> mlp;
  MoeCache<R> moe_cache;
};
template <class R>
void block_forward(const LayerContext& ctx, const ParamStore<R>& ps, int64_t layer, R* x, BlockCache<R>& cache);
// dx: in = gradient of the block's output, out = gradient of its input.
template <class R>
void block_backward(const LayerContext& ctx, ParamStore<R>& ps, int64_t layer, const BlockCache<R>& cache, R* dx);

std::string layer_prefix(int64_t layer);

}  // namespace deepmoe
