// Causal multi-head attention cores for MLA (reference §1.5), in FP32 with the softmax in FP32.
//
// Queries are the T new tokens of one sequence; query i sees the first n_visible[i] context entries (causal:
// start_pos + i + 1). Each (query, head) output is computed by the same loop in the same order whatever the
// number of queries, the thread count or the partition, so results are batch invariant.
//
// - naive: decompressed keys/values, scores = q·k over qk_dim per head, out = Σ p·v over v_dim.
// - absorbed: W_UK already folded into q (q_latent [T, H, C]); the context is the cache rows [C latent | R rope key]
//   shared by all heads, in FP32 or BF16; scores = q_latent·c + q_pe·k_pe, out = Σ p·c (W_UV applied later).
//   The cache is one contiguous array or paged: fixed-size blocks of rows, each block contiguous, found through a
//   table of block addresses (a paged KV cache grows without copying and shares blocks between sequences). Each
//   output is the same arithmetic over the same rows in the same order either way, so paging changes no bit.
#pragma once

#include <cstdint>

#include "core/cpu_features.h"
#include "core/dtype.h"

namespace deepmoe {

class ThreadPool;

struct NaiveAttentionArgs {
  const float* q = nullptr;  // [n_queries, n_heads, qk_dim]
  const float* k = nullptr;  // [n_context, n_heads, qk_dim]
  const float* v = nullptr;  // [n_context, n_heads, v_dim]
  float* out = nullptr;      // [n_queries, n_heads, v_dim]
  int64_t n_queries = 0, n_context = 0;
  int n_heads = 0, qk_dim = 0, v_dim = 0;
  const int64_t* n_visible = nullptr;  // [n_queries], each in [1, n_context]
  float scale = 1.0f;
};

struct AbsorbedAttentionArgs {
  const float* q_latent = nullptr;  // [n_queries, n_heads, latent_dim]
  const float* q_rope = nullptr;    // [n_queries, n_heads, rope_dim]
  const void* cache = nullptr;      // [n_context, cache_row] rows: [latent_dim latent | rope_dim key | padding]
  DType cache_dtype = DType::F32;   // F32 or BF16
  int64_t cache_row = 0;            // elements per cache row (>= latent_dim + rope_dim)
  float* out = nullptr;             // [n_queries, n_heads, latent_dim]
  int64_t n_queries = 0, n_context = 0;
  int n_heads = 0, latent_dim = 0, rope_dim = 0;
  const int64_t* n_visible = nullptr;
  float scale = 1.0f;
  // Paged cache: when cache_blocks is set, row t starts at element (t % block_rows) · cache_row of block
  // cache_blocks[t / block_rows], and `cache` is not read.
  const void* const* cache_blocks = nullptr;
  int64_t block_rows = 0;
};

// The cache rows as the kernels address them: a contiguous cache is a single block.
struct CacheRowView {
  const void* const* blocks = nullptr;
  int64_t block_rows = 0;  // rows per block
  int64_t row = 0;         // elements from one row to the next within a block
  bool bf16 = false;
  // The first element of row t.
  const void* row_at(int64_t t) const {
    const int64_t elem_bytes = bf16 ? 2 : 4;
    return static_cast<const char*>(blocks[t / block_rows]) + (t % block_rows) * row * elem_bytes;
  }
};

void attention_naive(const NaiveAttentionArgs& a, ThreadPool* pool = nullptr);
void attention_naive_ref(const NaiveAttentionArgs& a);  // FP64 loops
void attention_absorbed(const AbsorbedAttentionArgs& a, ThreadPool* pool = nullptr);
void attention_absorbed_ref(const AbsorbedAttentionArgs& a);  // FP64 loops

// Totals over every attention_naive / attention_absorbed call of this process so far: the wall time each call took
// on its calling thread and the multiply-add FLOPs of its scores and weighted sums (2 per multiply-add), so that
// benchmarks can report attention's share of a prefill and its rate against the machine's FMA peak.
struct AttentionCounters {
  uint64_t calls = 0;
  double flops = 0;
  double seconds = 0;
};
AttentionCounters attention_counters();

// The same at an explicit ISA level (level <= the CPU's; the default entry points use cpu_features().level). All
// levels give bitwise identical results.
void attention_naive_at_level(IsaLevel level, const NaiveAttentionArgs& a, ThreadPool* pool);
void attention_absorbed_at_level(IsaLevel level, const AbsorbedAttentionArgs& a, ThreadPool* pool);

}  // namespace deepmoe
