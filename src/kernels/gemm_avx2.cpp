// AVX2+FMA+F16C inner kernels (built with -march=x86-64-v3; entered only when cpu_features().level >= Avx2).
// Only raw loops, intrinsics and templates in the anonymous namespace here (see core/dtype_bulk_avx2.cpp).
//
// The arithmetic of gemm_avx512.cpp with 8-lane vectors: an output's 16 lanes (gemm.h) are two ymm, "lo"
// (k ≡ 0..7 mod 16) and "hi" (k ≡ 8..15). lo + hi is the final tree's first level; the rest is +4, +2, +1 within
// a ymm. The last, partial step of a block blends the FMA result in only for valid k, so lanes past the block's
// end keep their value exactly, as the masked FMAs of AVX-512 do.
#include <immintrin.h>

#include <cstring>

#include "kernels/gemm_kernels.h"

namespace deepmoe::gemm_detail {
namespace {

__attribute__((always_inline)) inline
__m256i e4m3_to_f16_bits(__m128i bytes) {  // see gemm_avx512.cpp
  const __m256i h = _mm256_cvtepi8_epi16(bytes);
  return _mm256_and_si256(_mm256_slli_epi16(h, 7), _mm256_set1_epi16(int16_t(0xBF80)));
}

__attribute__((always_inline)) inline
float sum_lanes16(__m256 lo, __m256 hi) {
  const __m256 a = _mm256_add_ps(lo, hi);
  const __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  const __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
  return _mm_cvtss_f32(_mm_add_ss(c, _mm_movehdup_ps(c)));
}

// The tree's levels after the first (+4, +2, +1) for 8 outputs at once: out lane m holds r[2m] for m < 4 and
// r[2(m-4)+1] for m >= 4, so slot t must hold output (t % 2)·4 + t / 2.
__attribute__((always_inline)) inline
__m256 reduce8(const __m256* r) {
  __m256 s[4], t[2];
  for (int u = 0; u < 4; ++u)  // + l+4: 128-bit half h becomes output 2u+h's 4 partial lanes
    s[u] = _mm256_add_ps(_mm256_permute2f128_ps(r[2 * u], r[2 * u + 1], 0x20),
                         _mm256_permute2f128_ps(r[2 * u], r[2 * u + 1], 0x31));
  for (int v = 0; v < 2; ++v)  // + l+2
    t[v] = _mm256_add_ps(_mm256_shuffle_ps(s[2 * v], s[2 * v + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm256_shuffle_ps(s[2 * v], s[2 * v + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  // + l+1
  return _mm256_add_ps(_mm256_shuffle_ps(t[0], t[1], _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm256_shuffle_ps(t[0], t[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

// Valid-lane mask of the 8 k starting at `first` when `left` k remain (all ones if left ≥ 8).
__attribute__((always_inline)) inline
__m256i lane_mask(int left) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(left), idx);
}

// 16 W values [k, k + 16) of one row as lo/hi ymm; k + 16 may pass the block end only through `left` (< 16), in
// which case the missing values read as zero.
__attribute__((always_inline)) inline
void load_w16(DType dtype, const uint8_t* row, int64_t k, int left, __m256& lo, __m256& hi) {
  if (dtype == DType::F8_E4M3) {
    __m128i b;
    if (left >= 16) {
      b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + k));
    } else {
      alignas(16) uint8_t tail[16] = {};
      std::memcpy(tail, row + k, size_t(left));
      b = _mm_load_si128(reinterpret_cast<const __m128i*>(tail));
    }
    const __m256i h = e4m3_to_f16_bits(b);
    lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
    hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
  } else if (dtype == DType::BF16) {
    const uint16_t* p = reinterpret_cast<const uint16_t*>(row) + k;
    __m128i v0, v1;
    if (left >= 16) {
      v0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      v1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8));
    } else {
      alignas(16) uint16_t tail[16] = {};
      std::memcpy(tail, p, size_t(left) * 2);
      v0 = _mm_load_si128(reinterpret_cast<const __m128i*>(tail));
      v1 = _mm_load_si128(reinterpret_cast<const __m128i*>(tail + 8));
    }
    lo = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v0), 16));
    hi = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v1), 16));
  } else {
    const float* p = reinterpret_cast<const float*>(row) + k;
    if (left >= 16) {
      lo = _mm256_loadu_ps(p);
      hi = _mm256_loadu_ps(p + 8);
    } else {
      lo = _mm256_maskload_ps(p, lane_mask(left));
      hi = _mm256_maskload_ps(p + 8, lane_mask(left - 8));
    }
  }
}

// As in gemm_avx512.cpp: kGemvPrefetchBytes ahead in the row's slot of the task's stream, wrapping into the next
// group's rows past the row's end.
inline int64_t gemv_prefetch_offset(int64_t k0, int64_t k, int R, int elem_bytes) {
  const int64_t ahead = k0 + kGemvPrefetchBytes / elem_bytes, groups = ahead / k;
  return (groups * R * k + ahead - groups * k) * elem_bytes;
}

// R consecutive W rows (inside one 16-row panel) against M rows of A, all of K; promoted accumulators on the
// stack (16 registers hold only the partials).
// The weight dtype is a template parameter so load_w16's dtype branches fold away, and whole 16-wide steps run
// apart from a block's partial last step (a run-time dtype and step test per load halved the rate on the K = 1536
// decode shape).
template <DType D, int M, int R>
void gemv_group(const GemvArgs& g, int64_t row) {
  const WeightMatrix& w = *g.w;
  const int64_t k = w.k, kb_count = (k + kBlockK - 1) / kBlockK;
  constexpr size_t elem = D == DType::F8_E4M3 ? 1 : D == DType::BF16 ? 2 : 4;
  const uint8_t* wrow[R];
  for (int r = 0; r < R; ++r) wrow[r] = static_cast<const uint8_t*>(w.data) + size_t((row + r) * k) * elem;
  alignas(32) float acc[M][R][16] = {};
  for (int64_t kb = 0; kb < kb_count; ++kb) {
    const int64_t k0 = kb * kBlockK;
    const int kn = k - k0 < kBlockK ? int(k - k0) : kBlockK;
    __m256 plo[M][R], phi[M][R];
    for (int i = 0; i < M; ++i)
      for (int r = 0; r < R; ++r) plo[i][r] = phi[i][r] = _mm256_setzero_ps();
    {
      const int64_t offset = gemv_prefetch_offset(k0, k, R, int(elem));
      for (int r = 0; r < R; ++r)
        for (size_t line = 0; line < kBlockK * elem; line += 64)
          _mm_prefetch(reinterpret_cast<const char*>(wrow[r] + offset + line), _MM_HINT_T0);
    }
    const int full = kn / 16 * 16;
    for (int c = 0; c < full; c += 16)
      for (int r = 0; r < R; ++r) {
        __m256 wlo, whi;
        load_w16(D, wrow[r], k0 + c, 16, wlo, whi);
        for (int i = 0; i < M; ++i) {
          const float* a = g.a + i * k + k0 + c;
          plo[i][r] = _mm256_fmadd_ps(_mm256_loadu_ps(a), wlo, plo[i][r]);
          phi[i][r] = _mm256_fmadd_ps(_mm256_loadu_ps(a + 8), whi, phi[i][r]);
        }
      }
    if (full < kn) {
      const int left = kn - full;
      const __m256i mlo = lane_mask(left), mhi = lane_mask(left - 8);
      for (int r = 0; r < R; ++r) {
        __m256 wlo, whi;
        load_w16(D, wrow[r], k0 + full, left, wlo, whi);
        for (int i = 0; i < M; ++i) {
          const float* a = g.a + i * k + k0 + full;
          plo[i][r] = _mm256_blendv_ps(
              plo[i][r], _mm256_fmadd_ps(_mm256_maskload_ps(a, mlo), wlo, plo[i][r]), _mm256_castsi256_ps(mlo));
          phi[i][r] = _mm256_blendv_ps(
              phi[i][r], _mm256_fmadd_ps(_mm256_maskload_ps(a + 8, mhi), whi, phi[i][r]), _mm256_castsi256_ps(mhi));
        }
      }
    }
    const float ws = D == DType::F8_E4M3 ? w.scale_inv[(row / kBlockK) * kb_count + kb] * 256.0f : 1.0f;
    for (int i = 0; i < M; ++i) {
      const __m256 s = _mm256_set1_ps(g.a_scale ? g.a_scale[i * kb_count + kb] * ws : ws);
      for (int r = 0; r < R; ++r) {
        _mm256_store_ps(acc[i][r], _mm256_fmadd_ps(plo[i][r], s, _mm256_load_ps(acc[i][r])));
        _mm256_store_ps(acc[i][r] + 8, _mm256_fmadd_ps(phi[i][r], s, _mm256_load_ps(acc[i][r] + 8)));
      }
    }
  }
  for (int i = 0; i < M; ++i)
    for (int r = 0; r < R; ++r)
      g.c[i * w.n + row + r] = sum_lanes16(_mm256_load_ps(acc[i][r]), _mm256_load_ps(acc[i][r] + 8));
}

template <DType D, int M>
void gemv_m(const GemvArgs& g) {
  constexpr int R = M == 1 ? 4 : M == 2 ? 2 : 1;  // 2·M·R partials within the 16 registers
  int64_t j = 0;
  for (; g.rows - j >= R; j += R) gemv_group<D, M, R>(g, g.row0 + j);
  for (; j < g.rows; ++j) gemv_group<D, M, 1>(g, g.row0 + j);
}

template <DType D>
void gemv_dtype(const GemvArgs& g) {
  switch (g.m) {
    case 1: gemv_m<D, 1>(g); break;
    case 2: gemv_m<D, 2>(g); break;
    case 3: gemv_m<D, 3>(g); break;
    default: gemv_m<D, 4>(g); break;
  }
}

// One half (h = 0: lanes 0-7, h = 1: lanes 8-15) of MR A rows × 4 W rows, over each block of the chunk in turn,
// promoted into the lane accumulators after every block.
template <int MR>
__attribute__((always_inline)) inline
void half_tile(const BlockArgs& g, int64_t r, int j0, int h) {
  constexpr int NR = 4;
  for (int b = 0; b < g.n_blocks; ++b) {
    const int kn = b == g.n_blocks - 1 ? g.kn_last : kBlockK;
    const float* a = g.a + r * g.lda + b * kBlockK + 8 * h;
    const float* w = g.wbuf + j0 * g.ldw + b * kBlockK + 8 * h;
    __m256 acc[MR][NR];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_ps();
    for (int c = 0; c < kn - 8 * h; c += 16) {
      const int left = kn - 8 * h - c;
      __m256 av[MR], wv[NR];
      for (int j = 0; j < NR; ++j) wv[j] = _mm256_loadu_ps(w + j * g.ldw + c);
      if (left >= 8) {
        for (int i = 0; i < MR; ++i) av[i] = _mm256_loadu_ps(a + i * g.lda + c);
        for (int i = 0; i < MR; ++i)
          for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_fmadd_ps(av[i], wv[j], acc[i][j]);
      } else {
        const __m256i m = lane_mask(left);
        for (int i = 0; i < MR; ++i) av[i] = _mm256_maskload_ps(a + i * g.lda + c, m);
        for (int i = 0; i < MR; ++i)
          for (int j = 0; j < NR; ++j)
            acc[i][j] =
                _mm256_blendv_ps(acc[i][j], _mm256_fmadd_ps(av[i], wv[j], acc[i][j]), _mm256_castsi256_ps(m));
      }
    }
    for (int i = 0; i < MR; ++i) {
      const float ws = g.w_scale[b];
      const __m256 s = _mm256_set1_ps(g.a_scale ? g.a_scale[(r + i) * g.a_scale_stride + b] * ws : ws);
      for (int j = 0; j < NR; ++j) {
        float* lane = g.lacc + ((r + i) * kPanelRows + j0 + j) * kLanes + 8 * h;
        const __m256 prev = g.first_chunk && b == 0 ? _mm256_setzero_ps() : _mm256_loadu_ps(lane);
        _mm256_storeu_ps(lane, _mm256_fmadd_ps(acc[i][j], s, prev));
      }
    }
  }
}

template <int MR>
void row_group(const BlockArgs& g, int64_t r) {
  for (int j0 = 0; j0 < kPanelRows; j0 += 4) {
    half_tile<MR>(g, r, j0, 0);
    half_tile<MR>(g, r, j0, 1);
  }
}

}  // namespace

void reduce_lanes_avx2(const float* lanes, int n, float* out) {
  int j = 0;
  for (; n - j >= 8; j += 8) {
    __m256 r[8];
    for (int t = 0; t < 8; ++t) {
      const float* l = lanes + (j + (t % 2) * 4 + t / 2) * kLanes;
      r[t] = _mm256_add_ps(_mm256_loadu_ps(l), _mm256_loadu_ps(l + 8));  // the tree's first level, (l, l+8)
    }
    _mm256_storeu_ps(out + j, reduce8(r));
  }
  for (; j < n; ++j) out[j] = sum_lanes16(_mm256_loadu_ps(lanes + j * kLanes), _mm256_loadu_ps(lanes + j * kLanes + 8));
}

void gemv_rows_avx2(const GemvArgs& g) {
  // Passes of up to 4 A rows over the same W rows (16 registers hold the partials of 4 rows).
  const int64_t kb_count = (g.w->k + kBlockK - 1) / kBlockK;
  for (int64_t i0 = 0; i0 < g.m; i0 += 4) {
    GemvArgs part = g;
    part.m = g.m - i0 < 4 ? g.m - i0 : 4;
    part.a = g.a + i0 * g.w->k;
    part.a_scale = g.a_scale ? g.a_scale + i0 * kb_count : nullptr;
    part.c = g.c + i0 * g.w->n;
    switch (g.w->dtype) {
      case DType::F8_E4M3: gemv_dtype<DType::F8_E4M3>(part); break;
      case DType::BF16: gemv_dtype<DType::BF16>(part); break;
      default: gemv_dtype<DType::F32>(part); break;
    }
  }
}

void block_update_avx2(const BlockArgs& g) {
  int64_t r = 0;
  for (; g.rows - r >= 2; r += 2) row_group<2>(g, r);
  if (r < g.rows) row_group<1>(g, r);
}

void decode_block_avx2(const DecodeArgs& d) {
  const size_t elem = dtype_size_bytes(d.dtype);
  for (int64_t r = 0; r < kPanelRows; ++r) {
    float* out = d.wbuf + r * d.ldw;
    int c = 0;
    if (r < d.next_rows)
      for (int64_t b = 0; b < d.next_bytes; b += 64)
        _mm_prefetch(reinterpret_cast<const char*>(d.next + r * d.k * int64_t(elem) + b), _MM_HINT_T0);
    if (r < d.rows) {
      const uint8_t* src = static_cast<const uint8_t*>(d.data) + size_t((d.row0 + r) * d.k + d.col0) * elem;
      for (; c < d.kn; c += 16) {
        __m256 lo, hi;
        load_w16(d.dtype, src, c, d.kn - c, lo, hi);
        _mm256_storeu_ps(out + c, lo);
        _mm256_storeu_ps(out + c + 8, hi);
      }
    }
    for (; c < d.ldw; c += 8) _mm256_storeu_ps(out + c, _mm256_setzero_ps());
  }
}

}  // namespace deepmoe::gemm_detail
