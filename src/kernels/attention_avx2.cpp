#include "kernels/attention_avx2.h"

#include <immintrin.h>

#include "kernels/exp_f32.h"

namespace deepmoe::attention_detail {

float dot_avx2(const float* a, const float* b, int n) {
  __m256 acc = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
  alignas(32) float l[8];
  _mm256_store_ps(l, acc);
  float tail = 0;
  for (; i < n; ++i) tail += a[i] * b[i];
  return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7])) + tail;
}

void softmax_row_avx2(float* s, int64_t n) { softmax_row_f32(s, n); }

void axpy_avx2(float alpha, const float* x, float* y, int n) {
  const __m256 va = _mm256_set1_ps(alpha);
  int i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_mul_ps(va, _mm256_loadu_ps(x + i))));
  for (; i < n; ++i) y[i] += alpha * x[i];
}

namespace {

template <int NH>
void dot_heads(const float* q, int64_t q_stride, const float* c, int n, float* out) {
  __m256 acc[NH];
  for (int h = 0; h < NH; ++h) acc[h] = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 cv = _mm256_loadu_ps(c + i);
    for (int h = 0; h < NH; ++h)
      acc[h] = _mm256_add_ps(acc[h], _mm256_mul_ps(_mm256_loadu_ps(q + h * q_stride + i), cv));
  }
  for (int h = 0; h < NH; ++h) {
    alignas(32) float l[8];
    _mm256_store_ps(l, acc[h]);
    const float* a = q + h * q_stride;
    float tail = 0;
    for (int j = i; j < n; ++j) tail += a[j] * c[j];
    out[h] = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7])) + tail;
  }
}

__attribute__((always_inline)) inline __m256 load_row8(const void* cache, bool bf16, int64_t offset) {
  if (!bf16) return _mm256_loadu_ps(static_cast<const float*>(cache) + offset);
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(cache) + offset));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

float load_one(const void* cache, bool bf16, int64_t offset) {
  if (!bf16) return static_cast<const float*>(cache)[offset];
  const uint32_t bits = uint32_t(static_cast<const uint16_t*>(cache)[offset]) << 16;
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}

template <int NH>
void weighted_rows(const float* p, int64_t p_stride, const CacheRowView& cache, int64_t n, int dim, float* out,
                   int64_t out_stride) {
  const bool bf16 = cache.bf16;
  const int64_t row = cache.row, block_rows = cache.block_rows;
  int d = 0;
  for (; d + 8 <= dim; d += 8) {
    __m256 y[NH];
    for (int h = 0; h < NH; ++h) y[h] = _mm256_setzero_ps();
    for (int64_t t0 = 0; t0 < n; t0 += block_rows) {  // block by block, rows in increasing t
      const void* block = cache.blocks[t0 / block_rows];
      const int64_t rows = n - t0 < block_rows ? n - t0 : block_rows;
      const float* pt = p + t0;
      for (int64_t t = 0; t < rows; ++t) {
        const __m256 x = load_row8(block, bf16, t * row + d);
        for (int h = 0; h < NH; ++h)
          y[h] = _mm256_add_ps(y[h], _mm256_mul_ps(_mm256_broadcast_ss(pt + h * p_stride + t), x));
      }
    }
    for (int h = 0; h < NH; ++h) _mm256_storeu_ps(out + h * out_stride + d, y[h]);
  }
  for (; d < dim; ++d)
    for (int h = 0; h < NH; ++h) {
      float y = 0;
      for (int64_t t = 0; t < n; ++t) y += p[h * p_stride + t] * load_one(cache.row_at(t), bf16, d);
      out[h * out_stride + d] = y;
    }
}

}  // namespace

void dot_heads_avx2(const float* q, int64_t q_stride, int nh, const float* c, int n, float* out) {
  switch (nh) {
    case 1: return dot_heads<1>(q, q_stride, c, n, out);
    case 2: return dot_heads<2>(q, q_stride, c, n, out);
    case 3: return dot_heads<3>(q, q_stride, c, n, out);
    case 4: return dot_heads<4>(q, q_stride, c, n, out);
    case 5: return dot_heads<5>(q, q_stride, c, n, out);
    case 6: return dot_heads<6>(q, q_stride, c, n, out);
    case 7: return dot_heads<7>(q, q_stride, c, n, out);
    default: return dot_heads<8>(q, q_stride, c, n, out);
  }
}

void weighted_rows_avx2(const float* p, int64_t p_stride, int nh, const CacheRowView& cache, int64_t n, int dim,
                        float* out, int64_t out_stride) {
  switch (nh) {
    case 1: return weighted_rows<1>(p, p_stride, cache, n, dim, out, out_stride);
    case 2: return weighted_rows<2>(p, p_stride, cache, n, dim, out, out_stride);
    case 3: return weighted_rows<3>(p, p_stride, cache, n, dim, out, out_stride);
    case 4: return weighted_rows<4>(p, p_stride, cache, n, dim, out, out_stride);
    case 5: return weighted_rows<5>(p, p_stride, cache, n, dim, out, out_stride);
    case 6: return weighted_rows<6>(p, p_stride, cache, n, dim, out, out_stride);
    case 7: return weighted_rows<7>(p, p_stride, cache, n, dim, out, out_stride);
    default: return weighted_rows<8>(p, p_stride, cache, n, dim, out, out_stride);
  }
}

}  // namespace deepmoe::attention_detail
