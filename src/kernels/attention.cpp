#include "kernels/attention.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "core/cpu_features.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/attention_avx2.h"
#include "kernels/attention_avx512.h"
#include "kernels/exp_f32.h"

namespace deepmoe {
namespace {

// Dot product with eight fixed partial sums (vectorizable without reassociation flags; fixed order). The AVX2
// twin (attention_avx2.cpp) evaluates the same order, so every ISA gives the same bits.
float dot_baseline(const float* a, const float* b, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  float tail = 0;
  for (; i < n; ++i) tail += a[i] * b[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}

void axpy_baseline(float alpha, const float* x, float* y, int n) {
  for (int i = 0; i < n; ++i) y[i] += alpha * x[i];
}

void softmax_baseline(float* s, int64_t n) { softmax_row_f32(s, n); }

struct InnerLoops {
  float (*dot)(const float*, const float*, int);
  void (*axpy)(float, const float*, float*, int);
  void (*softmax)(float*, int64_t);  // softmax_row_f32 (kernels/exp_f32.h), built for the level
};

InnerLoops inner_loops(IsaLevel level) {
  if (level >= IsaLevel::Avx2)
    return {attention_detail::dot_avx2, attention_detail::axpy_avx2, attention_detail::softmax_row_avx2};
  return {dot_baseline, axpy_baseline, softmax_baseline};
}

void check_visible(const int64_t* n_visible, int64_t n_queries, int64_t n_context) {
  for (int64_t i = 0; i < n_queries; ++i)
    DEEPMOE_CHECK(n_visible[i] >= 1 && n_visible[i] <= n_context, "attention: n_visible out of range");
}

std::atomic<uint64_t> g_calls{0}, g_flops{0}, g_nanoseconds{0};

// Adds one call's FLOPs and wall time to the counters when it goes out of scope.
class CallTimer {
 public:
  explicit CallTimer(double flops) : flops_(flops), start_(std::chrono::steady_clock::now()) {}
  ~CallTimer() {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start_);
    g_calls.fetch_add(1, std::memory_order_relaxed);
    g_flops.fetch_add(uint64_t(flops_), std::memory_order_relaxed);
    g_nanoseconds.fetch_add(uint64_t(ns.count()), std::memory_order_relaxed);
  }
  CallTimer(const CallTimer&) = delete;
  CallTimer& operator=(const CallTimer&) = delete;

 private:
  double flops_;
  std::chrono::steady_clock::time_point start_;
};

// Σ over queries of the visible context: the (query, context row) pairs each head computes.
double visible_pairs(const int64_t* n_visible, int64_t n_queries) {
  double pairs = 0;
  for (int64_t i = 0; i < n_queries; ++i) pairs += double(n_visible[i]);
  return pairs;
}

// The absorbed core's cache as rows of blocks; a contiguous cache is the single block *contiguous.
CacheRowView cache_view(const AbsorbedAttentionArgs& a, const void* const* contiguous) {
  CacheRowView v;
  v.row = a.cache_row;
  v.bf16 = a.cache_dtype == DType::BF16;
  if (a.cache_blocks) {
    DEEPMOE_CHECK(a.block_rows > 0, "attention: paged cache without rows per block");
    v.blocks = a.cache_blocks;
    v.block_rows = a.block_rows;
  } else {
    v.blocks = contiguous;
    v.block_rows = std::max<int64_t>(a.n_context, 1);
  }
  return v;
}


// The absorbed core on AVX-512. Work item = (block of up to kQueriesPerItem consecutive queries, group of up to
// kHeadsPerItem heads), and the item walks the visible cache in blocks of kRowBlock rows: a block comes from memory
// once and then serves every query of the item from L2, for the scores and again for the weighted sum. One query
// per item re-read the whole visible cache (2.3 KB a row at V2/V3 widths) for each query and head group, which
// past ~1k rows no longer stays in the caches. Each (query, head) output is still exactly the baseline's
// arithmetic — the same dot per row, the same softmax over its own visible rows, the same sum in increasing row
// (carried through memory between row blocks, which changes no bit) — so which queries share an item, the thread
// count and the partition change nothing.
void absorbed_query_blocks_avx512(const AbsorbedAttentionArgs& a, const CacheRowView& view, ThreadPool* pool) {
  constexpr int kHeadsPerItem = 8;
  constexpr int64_t kQueriesPerItem = 8, kRowBlock = 64;
  const int C = a.latent_dim, R = a.rope_dim, H = a.n_heads;
  const int groups = (H + kHeadsPerItem - 1) / kHeadsPerItem;
  const int64_t query_blocks = (a.n_queries + kQueriesPerItem - 1) / kQueriesPerItem;
  // Grows geometrically and never initializes: the scores of a causal prefill grow a little with every item.
  class Floats {
   public:
    float* at_least(int64_t n) {
      if (size_t(n) > size_) {
        size_ = std::max(size_t(n), size_ + size_ / 2);
        data_.reset(new float[size_]);
      }
      return data_.get();
    }

   private:
    std::unique_ptr<float[]> data_;
    size_t size_ = 0;
  };
  struct alignas(64) ItemScratch {  // one cache line each
    Floats scores, rope_scores, q_pairs, q_rope_pairs;
  };
  std::vector<ItemScratch> scratch(size_t(pool ? pool->size() : 1));
  // Later queries see more of the cache (causal prefill), so equal shares of items are unequal work: balanced.
  parallel_for_balanced(pool, query_blocks * groups, [&](int64_t task, int worker) {
    ItemScratch& own = scratch[size_t(worker)];
    const int64_t i0 = (task / groups) * kQueriesPerItem, nq = std::min(kQueriesPerItem, a.n_queries - i0);
    const int h0 = int(task % groups) * kHeadsPerItem, nh = std::min(H - h0, kHeadsPerItem);
    const int64_t n_max = *std::max_element(a.n_visible + i0, a.n_visible + i0 + nq);
    const int64_t lat_pairs = attention_detail::dot_heads_scratch_floats(C),
                  rope_pairs = attention_detail::dot_heads_scratch_floats(R);
    // scores of (query qi, head h) at [(qi · nh + h) · n_max, + n_visible[i0 + qi])
    float* const scores = own.scores.at_least(nq * nh * n_max);
    float* const rope_scores = own.rope_scores.at_least(nh * kRowBlock);
    float* const q_pairs = own.q_pairs.at_least(nq * lat_pairs);
    float* const q_rope_pairs = own.q_rope_pairs.at_least(nq * rope_pairs);
    auto q_lat = [&](int64_t qi) { return a.q_latent + ((i0 + qi) * H + h0) * C; };
    auto q_rope = [&](int64_t qi) { return a.q_rope + ((i0 + qi) * H + h0) * R; };
    for (int64_t qi = 0; qi < nq; ++qi) {
      attention_detail::pack_head_pairs_avx512(q_lat(qi), C, nh, C, q_pairs + qi * lat_pairs);
      attention_detail::pack_head_pairs_avx512(q_rope(qi), R, nh, R, q_rope_pairs + qi * rope_pairs);
    }
    for (int64_t t0 = 0; t0 < n_max; t0 += kRowBlock)
      for (int64_t qi = 0; qi < nq; ++qi) {
        const int64_t rows = std::min(t0 + kRowBlock, a.n_visible[i0 + qi]) - t0;
        if (rows <= 0) continue;
        float* s = scores + qi * nh * n_max + t0;
        if (C % 8 == 0 && R % 8 == 0) {
          attention_detail::scores_rows_packed_avx512(q_pairs + qi * lat_pairs, q_rope_pairs + qi * rope_pairs, nh,
                                                      view, C, R, t0, rows, a.scale, s, n_max);
          continue;
        }
        attention_detail::dot_heads_rows_packed_avx512(q_lat(qi), C, q_pairs + qi * lat_pairs, nh, view, 0,
                                                       t0, rows, C, s, n_max);
        attention_detail::dot_heads_rows_packed_avx512(q_rope(qi), R, q_rope_pairs + qi * rope_pairs, nh,
                                                       view, C, t0, rows, R, rope_scores, kRowBlock);
        for (int h = 0; h < nh; ++h)
          for (int64_t r = 0; r < rows; ++r)
            s[h * n_max + r] = (s[h * n_max + r] + rope_scores[h * kRowBlock + r]) * a.scale;
      }
    for (int64_t qi = 0; qi < nq; ++qi)
      attention_detail::softmax_heads_avx512(scores + qi * nh * n_max, n_max, nh, a.n_visible[i0 + qi]);
    for (int64_t t0 = 0; t0 < n_max; t0 += kRowBlock)
      for (int64_t qi = 0; qi < nq; ++qi) {
        const int64_t row1 = std::min(t0 + kRowBlock, a.n_visible[i0 + qi]);
        if (row1 <= t0) continue;
        attention_detail::weighted_rows_range_avx512(scores + qi * nh * n_max, n_max, nh, view, t0, row1, C,
                                                     a.out + ((i0 + qi) * H + h0) * C, C, t0 == 0);
      }
  });
}

}  // namespace

AttentionCounters attention_counters() {
  AttentionCounters c;
  c.calls = g_calls.load(std::memory_order_relaxed);
  c.flops = double(g_flops.load(std::memory_order_relaxed));
  c.seconds = 1e-9 * double(g_nanoseconds.load(std::memory_order_relaxed));
  return c;
}

void attention_naive(const NaiveAttentionArgs& a, ThreadPool* pool) {
  const CallTimer timer(2.0 * visible_pairs(a.n_visible, a.n_queries) * a.n_heads * (a.qk_dim + a.v_dim));
  attention_naive_at_level(cpu_features().level, a, pool);
}

void attention_absorbed(const AbsorbedAttentionArgs& a, ThreadPool* pool) {
  // scores over latent + rope, then the weighted sum over the latent
  const CallTimer timer(2.0 * visible_pairs(a.n_visible, a.n_queries) * a.n_heads *
                        (2.0 * a.latent_dim + a.rope_dim));
  attention_absorbed_at_level(cpu_features().level, a, pool);
}

void attention_naive_at_level(IsaLevel level, const NaiveAttentionArgs& a, ThreadPool* pool) {
  check_visible(a.n_visible, a.n_queries, a.n_context);
  const InnerLoops f = inner_loops(level);
  const int64_t tasks = a.n_queries * a.n_heads;
  std::vector<std::vector<float>> scratch(size_t(pool ? pool->size() : 1));
  parallel_for_balanced(pool, tasks, [&](int64_t task, int worker) {  // unequal items in causal prefill
    std::vector<float>& scores = scratch[size_t(worker)];
    scores.resize(size_t(a.n_context));
    int64_t i = task / a.n_heads;
    int h = int(task % a.n_heads);
    const float* q = a.q + (i * a.n_heads + h) * a.qk_dim;
    int64_t n = a.n_visible[i];
    for (int64_t t = 0; t < n; ++t)
      scores[size_t(t)] = f.dot(q, a.k + (t * a.n_heads + h) * a.qk_dim, a.qk_dim) * a.scale;
    f.softmax(scores.data(), n);
    float* o = a.out + (i * a.n_heads + h) * a.v_dim;
    for (int d = 0; d < a.v_dim; ++d) o[d] = 0;
    for (int64_t t = 0; t < n; ++t) f.axpy(scores[size_t(t)], a.v + (t * a.n_heads + h) * a.v_dim, o, a.v_dim);
  });
}

void attention_naive_ref(const NaiveAttentionArgs& a) {
  for (int64_t i = 0; i < a.n_queries; ++i)
    for (int h = 0; h < a.n_heads; ++h) {
      int64_t n = a.n_visible[i];
      std::vector<double> s(static_cast<size_t>(n));
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t t = 0; t < n; ++t) {
        double acc = 0;
        for (int d = 0; d < a.qk_dim; ++d)
          acc += double(a.q[(i * a.n_heads + h) * a.qk_dim + d]) * a.k[(t * a.n_heads + h) * a.qk_dim + d];
        s[size_t(t)] = acc * a.scale;
        mx = std::max(mx, s[size_t(t)]);
      }
      double sum = 0;
      for (auto& x : s) sum += (x = std::exp(x - mx));
      for (int d = 0; d < a.v_dim; ++d) {
        double acc = 0;
        for (int64_t t = 0; t < n; ++t) acc += s[size_t(t)] / sum * a.v[(t * a.n_heads + h) * a.v_dim + d];
        a.out[(i * a.n_heads + h) * a.v_dim + d] = float(acc);
      }
    }
}

void attention_absorbed_at_level(IsaLevel level, const AbsorbedAttentionArgs& a, ThreadPool* pool) {
  check_visible(a.n_visible, a.n_queries, a.n_context);
  DEEPMOE_CHECK(a.cache_dtype == DType::F32 || a.cache_dtype == DType::BF16, "attention: cache dtype");
  const void* contiguous = a.cache;
  const CacheRowView view = cache_view(a, &contiguous);
  if (level >= IsaLevel::Avx512) return absorbed_query_blocks_avx512(a, view, pool);
  const InnerLoops f = inner_loops(level);
  const int C = a.latent_dim, R = a.rope_dim, H = a.n_heads;
  // Work item = (query, head group): a cache row is converted once per item and used by all its heads. The
  // group size is fixed (not derived from the thread count), and each head's arithmetic is the same in any group.
  constexpr int kHeadsPerTask = 8;
  const int groups = (H + kHeadsPerTask - 1) / kHeadsPerTask;
  // Later queries see more of the cache (causal prefill), so equal shares of items are unequal work: balanced.
  struct alignas(64) ItemScratch {  // one cache line each: workers resize their own every item
    std::vector<float> scores, row;
  };
  std::vector<ItemScratch> scratch(size_t(pool ? pool->size() : 1));
  parallel_for_balanced(pool, a.n_queries * groups, [&](int64_t task, int worker) {
    ItemScratch& own = scratch[size_t(worker)];
    std::vector<float>& scores = own.scores;
    std::vector<float>& row = own.row;
    row.resize(size_t(C + R));
    const int64_t i = task / groups;
    const int h0 = int(task % groups) * kHeadsPerTask, h1 = std::min(H, h0 + kHeadsPerTask), nh = h1 - h0;
    const int64_t n = a.n_visible[i];
    scores.assign(size_t(nh * n), 0.0f);
    auto load_row = [&](int64_t t) -> const float* {
      if (!view.bf16) return static_cast<const float*>(view.row_at(t));
      convert_bf16_to_f32(static_cast<const uint16_t*>(view.row_at(t)), row.data(), size_t(C + R));
      return row.data();
    };
    if (level >= IsaLevel::Avx2) {
      // All heads of the group at once, with each head's arithmetic exactly the baseline's (attention_avx2.h).
      float lat[kHeadsPerTask], rope[kHeadsPerTask];
      for (int64_t t = 0; t < n; ++t) {
        const float* c = load_row(t);
        attention_detail::dot_heads_avx2(a.q_latent + (i * H + h0) * C, C, nh, c, C, lat);
        attention_detail::dot_heads_avx2(a.q_rope + (i * H + h0) * R, R, nh, c + C, R, rope);
        for (int h = 0; h < nh; ++h) scores[size_t(h * n + t)] = (lat[h] + rope[h]) * a.scale;
      }
      for (int h = 0; h < nh; ++h) f.softmax(scores.data() + h * n, n);
      attention_detail::weighted_rows_avx2(scores.data(), n, nh, view, n, C, a.out + (i * H + h0) * C, C);
      return;
    }
    for (int64_t t = 0; t < n; ++t) {
      const float* c = load_row(t);
      for (int h = h0; h < h1; ++h) {
        const float* ql = a.q_latent + (i * H + h) * C;
        const float* qr = a.q_rope + (i * H + h) * R;
        scores[size_t((h - h0) * n + t)] = (f.dot(ql, c, C) + f.dot(qr, c + C, R)) * a.scale;
      }
    }
    for (int h = h0; h < h1; ++h) {
      f.softmax(scores.data() + (h - h0) * n, n);
      float* o = a.out + (i * H + h) * C;
      for (int d = 0; d < C; ++d) o[d] = 0;
    }
    for (int64_t t = 0; t < n; ++t) {
      const float* c = load_row(t);
      for (int h = h0; h < h1; ++h) f.axpy(scores[size_t((h - h0) * n + t)], c, a.out + (i * H + h) * C, C);
    }
  });
}

void attention_absorbed_ref(const AbsorbedAttentionArgs& a) {
  const int C = a.latent_dim, R = a.rope_dim, H = a.n_heads;
  const void* contiguous = a.cache;
  const CacheRowView view = cache_view(a, &contiguous);
  auto cache_at = [&](int64_t t, int d) -> double {
    if (!view.bf16) return static_cast<const float*>(view.row_at(t))[d];
    return bf16_to_f32(static_cast<const uint16_t*>(view.row_at(t))[d]);
  };
  for (int64_t i = 0; i < a.n_queries; ++i)
    for (int h = 0; h < H; ++h) {
      int64_t n = a.n_visible[i];
      std::vector<double> s(static_cast<size_t>(n));
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t t = 0; t < n; ++t) {
        double acc = 0;
        for (int d = 0; d < C; ++d) acc += double(a.q_latent[(i * H + h) * C + d]) * cache_at(t, d);
        for (int d = 0; d < R; ++d) acc += double(a.q_rope[(i * H + h) * R + d]) * cache_at(t, C + d);
        s[size_t(t)] = acc * a.scale;
        mx = std::max(mx, s[size_t(t)]);
      }
      double sum = 0;
      for (auto& x : s) sum += (x = std::exp(x - mx));
      for (int d = 0; d < C; ++d) {
        double acc = 0;
        for (int64_t t = 0; t < n; ++t) acc += s[size_t(t)] / sum * cache_at(t, d);
        a.out[(i * H + h) * C + d] = float(acc);
      }
    }
}

}  // namespace deepmoe
