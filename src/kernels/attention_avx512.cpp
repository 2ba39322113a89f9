// AVX-512 inner loops of the absorbed attention core (built with -march=x86-64-v4; see attention_avx512.h). Only
// raw loops and intrinsics here. -ffp-contract=off keeps every multiply and add separate, as in the baseline.
#include "kernels/attention_avx512.h"

#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

#include "kernels/exp_f32.h"

// GCC 12's AVX-512 headers build some intrinsics from a deliberately undefined vector, which -Wuninitialized
// reports once they are inlined here; the lanes in question are always overwritten.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace deepmoe::attention_detail {
namespace {

__attribute__((always_inline)) inline __m512 widen_bf16(__m256i h) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

float load_one(const void* cache, bool bf16, int64_t offset) {
  if (!bf16) return static_cast<const float*>(cache)[offset];
  const uint32_t bits = uint32_t(static_cast<const uint16_t*>(cache)[offset]) << 16;
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}

// Cache values [offset, offset + 8) as FP32, in both halves of a register (one per head of a pair).
template <bool BF16>
__attribute__((always_inline)) inline __m512 load8_twice(const void* cache, int64_t offset) {
  if constexpr (!BF16) {
    return _mm512_broadcast_f32x8(_mm256_loadu_ps(static_cast<const float*>(cache) + offset));
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(cache) + offset));
    return _mm512_broadcast_f32x8(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
  }
}

// Cache values [offset, offset + 16) as FP32; lanes outside `mask` are zero.
template <bool BF16>
__attribute__((always_inline)) inline __m512 load16(const void* cache, int64_t offset, __mmask16 mask) {
  if constexpr (!BF16) {
    return _mm512_maskz_loadu_ps(mask, static_cast<const float*>(cache) + offset);
  } else {
    return widen_bf16(_mm256_maskz_loadu_epi16(mask, static_cast<const uint16_t*>(cache) + offset));
  }
}

// Keeps v in a register: without it the compiler folds the load into every multiply that uses v, one load per
// use, and the loop becomes load-bound.
__attribute__((always_inline)) inline void in_register(__m512& v) { asm("" : "+v"(v)); }

// dot_avx2's lane tree ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)) for both 8-lane halves of v at once: lane 0
// gets the first half's sum, lane 8 the second's. Each step adds a lane to its neighbour at distance 1, 2, 4, so
// every lane of a group ends up with the same sums, some with their operands swapped — the same bits, addition
// being commutative.
__attribute__((always_inline)) inline __m512 lane_tree(__m512 v) {
  v = _mm512_add_ps(v, _mm512_permute_ps(v, 0xB1));                   // lane i + lane i ^ 1
  v = _mm512_add_ps(v, _mm512_permute_ps(v, 0x4E));                   // + lane i ^ 2
  return _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0xB1));           // + lane i ^ 4
}

// The 8-lane partial dots of PAIRS head pairs (qp: per 8-wide chunk and pair, [head 2p | head 2p+1]) with RB
// cache rows (rows[r] + col0 onwards), one chunk at a time in increasing order, then each lane tree:
// sums[(p · RB + r) · 2 + half] is head 2p + half's with row r.
template <int PAIRS, int RB, bool BF16>
void dot_block(const float* qp, int chunks, const void* const* rows, int64_t col0, float* sums) {
  __m512 acc[PAIRS][RB];
  for (int p = 0; p < PAIRS; ++p)
    for (int r = 0; r < RB; ++r) acc[p][r] = _mm512_setzero_ps();
  for (int s = 0; s < chunks; ++s) {
    __m512 cv[RB];
    for (int r = 0; r < RB; ++r) cv[r] = load8_twice<BF16>(rows[r], col0 + 8 * s);
    for (int p = 0; p < PAIRS; ++p) {
      __m512 qv = _mm512_loadu_ps(qp + (int64_t(s) * PAIRS + p) * 16);
      in_register(qv);
      for (int r = 0; r < RB; ++r) acc[p][r] = _mm512_add_ps(acc[p][r], _mm512_mul_ps(qv, cv[r]));
    }
  }
  for (int p = 0; p < PAIRS; ++p)
    for (int r = 0; r < RB; ++r) {
      const __m512 t = lane_tree(acc[p][r]);
      sums[(p * RB + r) * 2] = _mm512_cvtss_f32(t);
      sums[(p * RB + r) * 2 + 1] = _mm_cvtss_f32(_mm512_extractf32x4_ps(t, 2));
    }
}

constexpr int kDotRows = 4;  // cache rows per pass of dot_block

// score_block's accumulation: dot_block's loop into acc (the row pointers taken into general registers first: left
// in an array, the compiler kept them in vector registers and moved each back before every use).
template <int PAIRS, int RB, bool BF16>
__attribute__((always_inline)) inline void dot_accumulate(const float* qp, int chunks, const void* const* rows,
                                                          int64_t col0, __m512 (&acc)[PAIRS][RB]) {
  const char* rp[RB];
  for (int r = 0; r < RB; ++r) {
    rp[r] = static_cast<const char*>(rows[r]) + col0 * (BF16 ? 2 : 4);
    asm("" : "+r"(rp[r]));
  }
  for (int p = 0; p < PAIRS; ++p)
    for (int r = 0; r < RB; ++r) acc[p][r] = _mm512_setzero_ps();
  for (int s = 0; s < chunks; ++s) {
    __m512 cv[RB];
    for (int r = 0; r < RB; ++r) cv[r] = load8_twice<BF16>(rp[r], 8 * s);
    for (int p = 0; p < PAIRS; ++p) {
      __m512 qv = _mm512_loadu_ps(qp + (int64_t(s) * PAIRS + p) * 16);
      in_register(qv);
      for (int r = 0; r < RB; ++r) acc[p][r] = _mm512_add_ps(acc[p][r], _mm512_mul_ps(qv, cv[r]));
    }
  }
}

// Each pair's lane trees gathered into one register: lane r holds head 2p's dot with row r, lane 8 + r head
// 2p + 1's (after lane_tree every lane of a half holds that half's sum).
template <int PAIRS, int RB>
__attribute__((always_inline)) inline void trees_by_pair(__m512 (&acc)[PAIRS][RB], __m512 (&out)[PAIRS]) {
  for (int p = 0; p < PAIRS; ++p) {
    __m512 v = lane_tree(acc[p][0]);
    for (int r = 1; r < RB; ++r) v = _mm512_mask_blend_ps(__mmask16(0x0101u << r), v, lane_tree(acc[p][r]));
    out[p] = v;
  }
}

// The scores of RB cache rows for 2 · PAIRS heads, latent and rope dots with no tail (both widths multiples of 8):
// dot_heads_rows_packed_avx512's two calls and attention.cpp's (latent + rope) · scale, with the empty tails'
// zero added as there, in registers.
template <int PAIRS, int RB, bool BF16>
void score_block(const float* qp_lat, int lat_chunks, const float* qp_rope, int rope_chunks, int nh,
                 const void* const* rows, float scale, float* out, int64_t out_stride) {
  __m512 acc[PAIRS][RB], lat[PAIRS], rope[PAIRS];
  dot_accumulate<PAIRS, RB, BF16>(qp_lat, lat_chunks, rows, 0, acc);
  trees_by_pair<PAIRS, RB>(acc, lat);
  dot_accumulate<PAIRS, RB, BF16>(qp_rope, rope_chunks, rows, 8 * int64_t(lat_chunks), acc);
  trees_by_pair<PAIRS, RB>(acc, rope);
  const __m512 zero = _mm512_setzero_ps(), sc = _mm512_set1_ps(scale);
  constexpr __mmask8 kRows = __mmask8((1u << RB) - 1);
  for (int p = 0; p < PAIRS; ++p) {
    const __m512 v = _mm512_mul_ps(_mm512_add_ps(_mm512_add_ps(lat[p], zero), _mm512_add_ps(rope[p], zero)), sc);
    _mm256_mask_storeu_ps(out + (2 * p) * out_stride, kRows, _mm512_castps512_ps256(v));
    if (2 * p + 1 < nh) _mm256_mask_storeu_ps(out + (2 * p + 1) * out_stride, kRows, _mm512_extractf32x8_ps(v, 1));
  }
}

template <int PAIRS, bool BF16>
void score_block_rows(int rb, const float* qp_lat, int lat_chunks, const float* qp_rope, int rope_chunks, int nh,
                      const void* const* rows, float scale, float* out, int64_t out_stride) {
  switch (rb) {
    case 1: return score_block<PAIRS, 1, BF16>(qp_lat, lat_chunks, qp_rope, rope_chunks, nh, rows, scale, out, out_stride);
    case 2: return score_block<PAIRS, 2, BF16>(qp_lat, lat_chunks, qp_rope, rope_chunks, nh, rows, scale, out, out_stride);
    case 3: return score_block<PAIRS, 3, BF16>(qp_lat, lat_chunks, qp_rope, rope_chunks, nh, rows, scale, out, out_stride);
    default: return score_block<PAIRS, 4, BF16>(qp_lat, lat_chunks, qp_rope, rope_chunks, nh, rows, scale, out, out_stride);
  }
}

template <bool BF16>
void score_rows(int pairs, int rb, const float* qp_lat, int lat_chunks, const float* qp_rope, int rope_chunks, int nh,
                const void* const* rows, float scale, float* out, int64_t out_stride) {
  switch (pairs) {
    case 1: return score_block_rows<1, BF16>(rb, qp_lat, lat_chunks, qp_rope, rope_chunks, nh, rows, scale, out, out_stride);
    case 2: return score_block_rows<2, BF16>(rb, qp_lat, lat_chunks, qp_rope, rope_chunks, nh, rows, scale, out, out_stride);
    case 3: return score_block_rows<3, BF16>(rb, qp_lat, lat_chunks, qp_rope, rope_chunks, nh, rows, scale, out, out_stride);
    default: return score_block_rows<4, BF16>(rb, qp_lat, lat_chunks, qp_rope, rope_chunks, nh, rows, scale, out, out_stride);
  }
}

template <int PAIRS, bool BF16>
void dot_block_rows(int rb, const float* qp, int chunks, const void* const* rows, int64_t col0, float* sums) {
  switch (rb) {
    case 1: return dot_block<PAIRS, 1, BF16>(qp, chunks, rows, col0, sums);
    case 2: return dot_block<PAIRS, 2, BF16>(qp, chunks, rows, col0, sums);
    case 3: return dot_block<PAIRS, 3, BF16>(qp, chunks, rows, col0, sums);
    default: return dot_block<PAIRS, 4, BF16>(qp, chunks, rows, col0, sums);
  }
}

template <bool BF16>
void dot_rows(int pairs, int rb, const float* qp, int chunks, const void* const* rows, int64_t col0, float* sums) {
  switch (pairs) {
    case 1: return dot_block_rows<1, BF16>(rb, qp, chunks, rows, col0, sums);
    case 2: return dot_block_rows<2, BF16>(rb, qp, chunks, rows, col0, sums);
    case 3: return dot_block_rows<3, BF16>(rb, qp, chunks, rows, col0, sums);
    default: return dot_block_rows<4, BF16>(rb, qp, chunks, rows, col0, sums);
  }
}

// out[h · out_stride + d] for h < NH, d < dim: the partial sums Σ p[h · p_stride + t] · row_t[d] continued over
// rows [row0, row1) in increasing t (from zero when `first`, else from the values already in out), multiply and add
// separate. A sum carried through memory between calls is the same FP32 value, so splitting the rows into ranges
// changes no bit.
template <int NH, bool BF16>
void weighted(const float* p, int64_t p_stride, const CacheRowView& cache, int64_t row0, int64_t row1, int dim,
              float* out, int64_t out_stride, bool first) {
  constexpr bool bf16 = BF16;
  const int64_t row = cache.row, block_rows = cache.block_rows;
  auto start = [&](int h, int d, __mmask16 mask) {
    return first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask, out + h * out_stride + d);
  };
  int d = 0;
  for (; d + 32 <= dim; d += 32) {
    __m512 y0[NH], y1[NH];
    for (int h = 0; h < NH; ++h) {
      y0[h] = start(h, d, 0xFFFF);
      y1[h] = start(h, d + 16, 0xFFFF);
    }
    for (int64_t t0 = row0; t0 < row1;) {  // block by block, rows in increasing t
      const int64_t in_block = t0 % block_rows, rows = std::min(row1 - t0, block_rows - in_block);
      const void* block = static_cast<const char*>(cache.blocks[t0 / block_rows]) + in_block * row * (bf16 ? 2 : 4);
      const float* pt = p + t0;
      for (int64_t t = 0; t < rows; ++t) {
        const __m512 x0 = load16<BF16>(block, t * row + d, 0xFFFF), x1 = load16<BF16>(block, t * row + d + 16, 0xFFFF);
        for (int h = 0; h < NH; ++h) {
          __m512 ph = _mm512_set1_ps(pt[h * p_stride + t]);
          in_register(ph);
          y0[h] = _mm512_add_ps(y0[h], _mm512_mul_ps(ph, x0));
          y1[h] = _mm512_add_ps(y1[h], _mm512_mul_ps(ph, x1));
        }
      }
      t0 += rows;
    }
    for (int h = 0; h < NH; ++h) {
      _mm512_storeu_ps(out + h * out_stride + d, y0[h]);
      _mm512_storeu_ps(out + h * out_stride + d + 16, y1[h]);
    }
  }
  for (; d < dim; d += 16) {  // the last columns, 16 or fewer at a time (masked lanes compute nothing stored)
    const int left = dim - d;
    const __mmask16 mask = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
    __m512 y[NH];
    for (int h = 0; h < NH; ++h) y[h] = start(h, d, mask);
    for (int64_t t0 = row0; t0 < row1;) {
      const int64_t in_block = t0 % block_rows, rows = std::min(row1 - t0, block_rows - in_block);
      const void* block = static_cast<const char*>(cache.blocks[t0 / block_rows]) + in_block * row * (bf16 ? 2 : 4);
      const float* pt = p + t0;
      for (int64_t t = 0; t < rows; ++t) {
        const __m512 x = load16<BF16>(block, t * row + d, mask);
        for (int h = 0; h < NH; ++h)
          y[h] = _mm512_add_ps(y[h], _mm512_mul_ps(_mm512_set1_ps(pt[h * p_stride + t]), x));
      }
      t0 += rows;
    }
    for (int h = 0; h < NH; ++h) _mm512_mask_storeu_ps(out + h * out_stride + d, mask, y[h]);
  }
}

// sum[h] = Σ s[h · stride + t] over t < n, each in increasing t (one chain per row, the NH chains side by side).
template <int NH>
void row_sums(const float* s, int64_t stride, int64_t n, float* sum) {
  float acc[NH];
  for (int h = 0; h < NH; ++h) acc[h] = 0.0f;
  for (int64_t t = 0; t < n; ++t)
    for (int h = 0; h < NH; ++h) acc[h] += s[h * stride + t];
  for (int h = 0; h < NH; ++h) sum[h] = acc[h];
}

template <bool BF16>
void weighted_heads(const float* p, int64_t p_stride, int nh, const CacheRowView& cache, int64_t row0, int64_t row1,
                    int dim, float* out, int64_t out_stride, bool first) {
  switch (nh) {
    case 1: return weighted<1, BF16>(p, p_stride, cache, row0, row1, dim, out, out_stride, first);
    case 2: return weighted<2, BF16>(p, p_stride, cache, row0, row1, dim, out, out_stride, first);
    case 3: return weighted<3, BF16>(p, p_stride, cache, row0, row1, dim, out, out_stride, first);
    case 4: return weighted<4, BF16>(p, p_stride, cache, row0, row1, dim, out, out_stride, first);
    case 5: return weighted<5, BF16>(p, p_stride, cache, row0, row1, dim, out, out_stride, first);
    case 6: return weighted<6, BF16>(p, p_stride, cache, row0, row1, dim, out, out_stride, first);
    case 7: return weighted<7, BF16>(p, p_stride, cache, row0, row1, dim, out, out_stride, first);
    default: return weighted<8, BF16>(p, p_stride, cache, row0, row1, dim, out, out_stride, first);
  }
}


// exp_f32 on 8 values in double precision: the same operations, lane by lane.
__attribute__((always_inline)) inline __m256 exp8_main(__m512d xd) {
  using namespace exp_f32_detail;
  const __m512d inv_ln2 = _mm512_set1_pd(std::bit_cast<double>(kInvLn2Scaled)),
                shift = _mm512_set1_pd(std::bit_cast<double>(kShift));
  const __m512d k_shifted = _mm512_fmadd_pd(inv_ln2, xd, shift);
  const __m512i ki = _mm512_castpd_si512(k_shifted);
  const __m512d k = _mm512_sub_pd(k_shifted, shift);
  const __m512d r = _mm512_fmsub_pd(inv_ln2, xd, k);
  // kExp2Table[ki % 32]: two 16-entry lookups (index bits 0-3), chosen by bit 4.
  const __m512i t0 = _mm512_loadu_si512(kExp2Table), t1 = _mm512_loadu_si512(kExp2Table + 8),
                t2 = _mm512_loadu_si512(kExp2Table + 16), t3 = _mm512_loadu_si512(kExp2Table + 24);
  const __m512i low = _mm512_permutex2var_epi64(t0, ki, t1), high = _mm512_permutex2var_epi64(t2, ki, t3);
  const __m512i tab = _mm512_mask_blend_epi64(_mm512_test_epi64_mask(ki, _mm512_set1_epi64(16)), low, high);
  const __m512d s = _mm512_castsi512_pd(_mm512_add_epi64(tab, _mm512_slli_epi64(ki, 47)));
  const __m512d z = _mm512_fmadd_pd(r, _mm512_set1_pd(std::bit_cast<double>(kPoly[0])),
                                    _mm512_set1_pd(std::bit_cast<double>(kPoly[1])));
  const __m512d r2 = _mm512_mul_pd(r, r);
  const __m512d y = _mm512_fmadd_pd(r, _mm512_set1_pd(std::bit_cast<double>(kPoly[2])), _mm512_set1_pd(1.0));
  return _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_fmadd_pd(z, r2, y), s));
}

// exp_f32 of the lanes of x in `mask`; the others are left as in x. Lanes beyond the polynomial's range go
// through exp_f32 itself (std::exp), one by one.
__attribute__((always_inline)) inline __m512 exp16(__m512 x, __mmask16 mask) {
  const __m512i top = _mm512_and_si512(_mm512_srli_epi32(_mm512_castps_si512(x), 20), _mm512_set1_epi32(0x7ff));
  const __mmask16 outside = mask & _mm512_cmpgt_epi32_mask(top, _mm512_set1_epi32(int(exp_f32_detail::kMaxTop)));
  const __m256 lo = exp8_main(_mm512_cvtps_pd(_mm512_castps512_ps256(x)));
  const __m256 hi = exp8_main(_mm512_cvtps_pd(_mm512_extractf32x8_ps(x, 1)));
  __m512 e = _mm512_mask_blend_ps(mask, x, _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1));
  if (outside) {
    alignas(64) float in[16], out[16];
    _mm512_store_ps(in, x);
    _mm512_store_ps(out, e);
    for (int l = 0; l < 16; ++l)
      if (outside >> l & 1) out[l] = exp_f32(in[l]);
    e = _mm512_load_ps(out);
  }
  return e;
}

}  // namespace

void pack_head_pairs_avx512(const float* q, int64_t q_stride, int nh, int n, float* qp) {
  const int chunks = n / 8, pairs = (nh + 1) / 2;
  for (int s = 0; s < chunks; ++s)  // chunk s, pair p: [head 2p lanes | head 2p + 1 lanes, zero if nh is odd]
    for (int p = 0; p < pairs; ++p)
      for (int half = 0; half < 2; ++half)
        for (int l = 0; l < 8; ++l) {
          const int h = 2 * p + half;
          qp[(int64_t(s) * pairs + p) * 16 + half * 8 + l] = h < nh ? q[h * q_stride + 8 * s + l] : 0.0f;
        }
}

void dot_heads_rows_packed_avx512(const float* q, int64_t q_stride, const float* qp, int nh, const CacheRowView& cache,
                                  int64_t col0, int64_t row0, int64_t n_rows, int n, float* out, int64_t out_stride) {
  const bool bf16 = cache.bf16;
  const int chunks = n / 8, pairs = (nh + 1) / 2, tail0 = chunks * 8;
  float sums[4 * kDotRows * 2];
  for (int64_t t0 = 0; t0 < n_rows; t0 += kDotRows) {
    const int rb = n_rows - t0 < kDotRows ? int(n_rows - t0) : kDotRows;
    const void* rows[kDotRows];  // the pass's rows may lie in two blocks of a paged cache
    for (int r = 0; r < rb; ++r) rows[r] = cache.row_at(row0 + t0 + r);
    if (bf16)
      dot_rows<true>(pairs, rb, qp, chunks, rows, col0, sums);
    else
      dot_rows<false>(pairs, rb, qp, chunks, rows, col0, sums);
    for (int r = 0; r < rb; ++r)
      for (int h = 0; h < nh; ++h) {
        // dot_avx2's finish: the lane tree, plus the tail summed on its own (zero when n is a multiple of 8).
        float tail = 0;
        for (int j = tail0; j < n; ++j) tail += q[h * q_stride + j] * load_one(rows[r], bf16, col0 + j);
        out[h * out_stride + t0 + r] = sums[((h / 2) * rb + r) * 2 + (h % 2)] + tail;
      }
  }
}

void scores_rows_packed_avx512(const float* qp_lat, const float* qp_rope, int nh, const CacheRowView& cache,
                               int latent_dim, int rope_dim, int64_t row0, int64_t n_rows, float scale, float* out,
                               int64_t out_stride) {
  const int pairs = (nh + 1) / 2, lat_chunks = latent_dim / 8, rope_chunks = rope_dim / 8;
  for (int64_t t0 = 0; t0 < n_rows; t0 += kDotRows) {
    const int rb = n_rows - t0 < kDotRows ? int(n_rows - t0) : kDotRows;
    const void* rows[kDotRows];  // the pass's rows may lie in two blocks of a paged cache
    for (int r = 0; r < rb; ++r) rows[r] = cache.row_at(row0 + t0 + r);
    if (cache.bf16)
      score_rows<true>(pairs, rb, qp_lat, lat_chunks, qp_rope, rope_chunks, nh, rows, scale, out + t0, out_stride);
    else
      score_rows<false>(pairs, rb, qp_lat, lat_chunks, qp_rope, rope_chunks, nh, rows, scale, out + t0, out_stride);
  }
}

void softmax_heads_avx512(float* s, int64_t stride, int nh, int64_t n) {
  float mx[8], inv[8];
  for (int h = 0; h < nh; ++h) {  // the maximum does not depend on the order it is taken in
    const float* sh = s + h * stride;
    __m512 m = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    int64_t t = 0;
    for (; t + 16 <= n; t += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(sh + t));
    if (t < n) m = _mm512_max_ps(m, _mm512_mask_loadu_ps(m, __mmask16((1u << (n - t)) - 1), sh + t));
    mx[h] = _mm512_reduce_max_ps(m);
  }
  // exp_f32 of each score minus the maximum, 16 at a time (the same bits as one at a time).
  for (int h = 0; h < nh; ++h) {
    float* sh = s + h * stride;
    const __m512 m = _mm512_set1_ps(mx[h]);
    for (int64_t t = 0; t < n; t += 16) {
      const __mmask16 mask = n - t >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - t)) - 1);
      const __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(mask, sh + t), m);
      _mm512_mask_storeu_ps(sh + t, mask, exp16(d, mask));
    }
  }
  float sum[8];
  switch (nh) {
    case 1: row_sums<1>(s, stride, n, sum); break;
    case 2: row_sums<2>(s, stride, n, sum); break;
    case 3: row_sums<3>(s, stride, n, sum); break;
    case 4: row_sums<4>(s, stride, n, sum); break;
    case 5: row_sums<5>(s, stride, n, sum); break;
    case 6: row_sums<6>(s, stride, n, sum); break;
    case 7: row_sums<7>(s, stride, n, sum); break;
    default: row_sums<8>(s, stride, n, sum); break;
  }
  for (int h = 0; h < nh; ++h) inv[h] = 1.0f / sum[h];
  for (int h = 0; h < nh; ++h) {
    float* sh = s + h * stride;
    const __m512 v = _mm512_set1_ps(inv[h]);
    int64_t t = 0;
    for (; t + 16 <= n; t += 16) _mm512_storeu_ps(sh + t, _mm512_mul_ps(_mm512_loadu_ps(sh + t), v));
    for (; t < n; ++t) sh[t] *= inv[h];
  }
}

void weighted_rows_range_avx512(const float* p, int64_t p_stride, int nh, const CacheRowView& cache, int64_t row0,
                                int64_t row1, int dim, float* out, int64_t out_stride, bool first) {
  if (cache.bf16) return weighted_heads<true>(p, p_stride, nh, cache, row0, row1, dim, out, out_stride, first);
  weighted_heads<false>(p, p_stride, nh, cache, row0, row1, dim, out, out_stride, first);
}

}  // namespace deepmoe::attention_detail
