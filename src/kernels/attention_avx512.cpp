// AVX-512 inner loops of the absorbed attention core (built with -march=x86-64-v4; see attention_avx512.h). Only
// raw loops and intrinsics here. -ffp-contract=off keeps every multiply and add separate, as in the baseline.
#include "kernels/attention_avx512.h"

#include <immintrin.h>

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
__attribute__((always_inline)) inline __m512 load8_twice(const void* cache, bool bf16, int64_t offset) {
  if (!bf16) return _mm512_broadcast_f32x8(_mm256_loadu_ps(static_cast<const float*>(cache) + offset));
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(cache) + offset));
  return _mm512_broadcast_f32x8(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
}

// Cache values [offset, offset + 16) as FP32; lanes outside `mask` are zero.
__attribute__((always_inline)) inline __m512 load16(const void* cache, bool bf16, int64_t offset, __mmask16 mask) {
  if (!bf16) return _mm512_maskz_loadu_ps(mask, static_cast<const float*>(cache) + offset);
  return widen_bf16(_mm256_maskz_loadu_epi16(mask, static_cast<const uint16_t*>(cache) + offset));
}

// The 8-lane partial dots of PAIRS head pairs (qp: per pair and 8-wide chunk, [head 2p | head 2p+1]) with RB
// cache rows (rows[r] + col0 onwards), one chunk at a time in increasing order; lanes[(p · RB + r) · 16 + ...].
template <int PAIRS, int RB>
void dot_block(const float* qp, int chunks, const void* const* rows, bool bf16, int64_t col0, float* lanes) {
  __m512 acc[PAIRS][RB];
  for (int p = 0; p < PAIRS; ++p)
    for (int r = 0; r < RB; ++r) acc[p][r] = _mm512_setzero_ps();
  for (int s = 0; s < chunks; ++s) {
    __m512 cv[RB];
    for (int r = 0; r < RB; ++r) cv[r] = load8_twice(rows[r], bf16, col0 + 8 * s);
    for (int p = 0; p < PAIRS; ++p) {
      const __m512 qv = _mm512_loadu_ps(qp + (int64_t(p) * chunks + s) * 16);
      for (int r = 0; r < RB; ++r) acc[p][r] = _mm512_add_ps(acc[p][r], _mm512_mul_ps(qv, cv[r]));
    }
  }
  for (int p = 0; p < PAIRS; ++p)
    for (int r = 0; r < RB; ++r) _mm512_storeu_ps(lanes + (p * RB + r) * 16, acc[p][r]);
}

template <int PAIRS>
void dot_block_rows(int rb, const float* qp, int chunks, const void* const* rows, bool bf16, int64_t col0,
                    float* lanes) {
  switch (rb) {
    case 1: return dot_block<PAIRS, 1>(qp, chunks, rows, bf16, col0, lanes);
    case 2: return dot_block<PAIRS, 2>(qp, chunks, rows, bf16, col0, lanes);
    default: return dot_block<PAIRS, 3>(qp, chunks, rows, bf16, col0, lanes);
  }
}

template <int NH>
void weighted(const float* p, int64_t p_stride, const CacheRowView& cache, int64_t n, int dim, float* out,
              int64_t out_stride) {
  const bool bf16 = cache.bf16;
  const int64_t row = cache.row, block_rows = cache.block_rows;
  int d = 0;
  for (; d + 32 <= dim; d += 32) {
    __m512 y0[NH], y1[NH];
    for (int h = 0; h < NH; ++h) y0[h] = y1[h] = _mm512_setzero_ps();
    for (int64_t t0 = 0; t0 < n; t0 += block_rows) {  // block by block, rows in increasing t
      const void* block = cache.blocks[t0 / block_rows];
      const int64_t rows = n - t0 < block_rows ? n - t0 : block_rows;
      const float* pt = p + t0;
      for (int64_t t = 0; t < rows; ++t) {
        const __m512 x0 = load16(block, bf16, t * row + d, 0xFFFF), x1 = load16(block, bf16, t * row + d + 16, 0xFFFF);
        for (int h = 0; h < NH; ++h) {
          const __m512 ph = _mm512_set1_ps(pt[h * p_stride + t]);
          y0[h] = _mm512_add_ps(y0[h], _mm512_mul_ps(ph, x0));
          y1[h] = _mm512_add_ps(y1[h], _mm512_mul_ps(ph, x1));
        }
      }
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
    for (int h = 0; h < NH; ++h) y[h] = _mm512_setzero_ps();
    for (int64_t t0 = 0; t0 < n; t0 += block_rows) {
      const void* block = cache.blocks[t0 / block_rows];
      const int64_t rows = n - t0 < block_rows ? n - t0 : block_rows;
      const float* pt = p + t0;
      for (int64_t t = 0; t < rows; ++t) {
        const __m512 x = load16(block, bf16, t * row + d, mask);
        for (int h = 0; h < NH; ++h)
          y[h] = _mm512_add_ps(y[h], _mm512_mul_ps(_mm512_set1_ps(pt[h * p_stride + t]), x));
      }
    }
    for (int h = 0; h < NH; ++h) _mm512_mask_storeu_ps(out + h * out_stride + d, mask, y[h]);
  }
}

}  // namespace

void dot_heads_rows_avx512(const float* q, int64_t q_stride, int nh, const CacheRowView& cache, int64_t col0,
                           int64_t n_rows, int n, float* out, int64_t out_stride, float* qp) {
  const bool bf16 = cache.bf16;
  const int chunks = n / 8, pairs = (nh + 1) / 2, tail0 = chunks * 8;
  for (int p = 0; p < pairs; ++p)  // pair p, chunk s: [head 2p lanes | head 2p + 1 lanes, zero if nh is odd]
    for (int s = 0; s < chunks; ++s)
      for (int half = 0; half < 2; ++half)
        for (int l = 0; l < 8; ++l) {
          const int h = 2 * p + half;
          qp[(int64_t(p) * chunks + s) * 16 + half * 8 + l] = h < nh ? q[h * q_stride + 8 * s + l] : 0.0f;
        }
  float lanes[4 * 3 * 16];
  for (int64_t t0 = 0; t0 < n_rows; t0 += 3) {
    const int rb = n_rows - t0 < 3 ? int(n_rows - t0) : 3;
    const void* rows[3];  // the pass's rows may lie in two blocks of a paged cache
    for (int r = 0; r < rb; ++r) rows[r] = cache.row_at(t0 + r);
    switch (pairs) {
      case 1: dot_block_rows<1>(rb, qp, chunks, rows, bf16, col0, lanes); break;
      case 2: dot_block_rows<2>(rb, qp, chunks, rows, bf16, col0, lanes); break;
      case 3: dot_block_rows<3>(rb, qp, chunks, rows, bf16, col0, lanes); break;
      default: dot_block_rows<4>(rb, qp, chunks, rows, bf16, col0, lanes); break;
    }
    for (int r = 0; r < rb; ++r)
      for (int h = 0; h < nh; ++h) {
        // dot_avx2's finish: the lane tree, plus the tail summed on its own.
        const float* l = lanes + ((h / 2) * rb + r) * 16 + (h % 2) * 8;
        float tail = 0;
        for (int j = tail0; j < n; ++j) tail += q[h * q_stride + j] * load_one(rows[r], bf16, col0 + j);
        out[h * out_stride + t0 + r] = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7])) + tail;
      }
  }
}

void weighted_rows_avx512(const float* p, int64_t p_stride, int nh, const CacheRowView& cache, int64_t n, int dim,
                          float* out, int64_t out_stride) {
  switch (nh) {
    case 1: return weighted<1>(p, p_stride, cache, n, dim, out, out_stride);
    case 2: return weighted<2>(p, p_stride, cache, n, dim, out, out_stride);
    case 3: return weighted<3>(p, p_stride, cache, n, dim, out, out_stride);
    case 4: return weighted<4>(p, p_stride, cache, n, dim, out, out_stride);
    case 5: return weighted<5>(p, p_stride, cache, n, dim, out, out_stride);
    case 6: return weighted<6>(p, p_stride, cache, n, dim, out, out_stride);
    case 7: return weighted<7>(p, p_stride, cache, n, dim, out, out_stride);
    default: return weighted<8>(p, p_stride, cache, n, dim, out, out_stride);
  }
}

}  // namespace deepmoe::attention_detail
