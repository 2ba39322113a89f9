// AVX2+FMA+F16C inner kernels (built with -march=x86-64-v3; entered only when cpu_features().level >= Avx2).
// Only raw loops, intrinsics and templates in the anonymous namespace here (see core/dtype_bulk_avx2.cpp).
//
// The order of gemm.h has 16 lanes per accumulator; a ymm holds 8, so each output's lanes 0-7 ("lo", k ≡ 0..7
// mod 16) and 8-15 ("hi") are accumulated in two passes over the block, 8 outputs per tile (MR rows × 8/MR panel
// rows, MR = 2 or 1). lo + hi is the tree's first level; reduce8 does the rest (+4, +2, +1), so every output is
// bitwise what gemm_avx512.cpp computes.
#include <immintrin.h>

#include <cstring>

#include "kernels/gemm_kernels.h"

namespace deepmoe::gemm_detail {
namespace {

// Out lane m holds r[2m] for m < 4 and r[2(m-4)+1] for m >= 4; so slot t must hold natural lane (t%2)·4 + t/2.
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

// Accumulates one half (h = 0: lanes 0-7, h = 1: lanes 8-15) of the 8 outputs of a tile.
template <int MR>
__attribute__((always_inline)) inline
void half_pass(const float* a, int64_t lda, const float* w, int kn, int h, __m256* acc) {
  constexpr int NR = 8 / MR;
  for (int t = 0; t < 8; ++t) acc[t] = _mm256_setzero_ps();
  const int steps = (kn + 15) / 16;
  for (int s = 0; s < steps; ++s) {
    const int k0 = 16 * s + 8 * h;
    __m256 av[MR];
    if (k0 + 8 <= kn) {
      for (int i = 0; i < MR; ++i) av[i] = _mm256_loadu_ps(a + i * lda + k0);
    } else {  // the partial last step: lanes past kn read as zero
      const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
      const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(kn - k0), lane);
      for (int i = 0; i < MR; ++i) av[i] = _mm256_maskload_ps(a + i * lda + k0, mask);
    }
    for (int t = 0; t < 8; ++t) {
      const int l = (t % 2) * 4 + t / 2;
      acc[t] = _mm256_fmadd_ps(av[l / NR], _mm256_loadu_ps(w + (l % NR) * kBlockK + k0), acc[t]);
    }
  }
}

template <int MR>
__attribute__((always_inline)) inline
void tile8(const float* a, int64_t lda, const float* w, int kn, __m256 scale, float* cacc) {
  __m256 lo[8], hi[8];
  half_pass<MR>(a, lda, w, kn, 0, lo);
  half_pass<MR>(a, lda, w, kn, 1, hi);
  for (int t = 0; t < 8; ++t) lo[t] = _mm256_add_ps(lo[t], hi[t]);
  _mm256_storeu_ps(cacc, _mm256_fmadd_ps(reduce8(lo), scale, _mm256_loadu_ps(cacc)));
}

__m256 tile_scale(const KbArgs& g, int64_t r, int nr, float ws) {
  alignas(32) float sc[8];
  for (int l = 0; l < 8; ++l) sc[l] = g.a_scale ? g.a_scale[(r + l / nr) * g.a_scale_stride] * ws : ws;
  return _mm256_load_ps(sc);
}

}  // namespace

void kb_update_avx2(const KbArgs& g) {
  for (int p = 0; p < g.n_panels; ++p) {
    const float ws = g.w_scale[p];
    const float* wp = g.wbuf + int64_t(p) * kPanelRows * kBlockK;
    float* cp = g.cacc + int64_t(p) * g.rows * 16;
    for (int64_t r = 0; r < g.rows;) {
      const int64_t left = g.rows - r;
      if (left >= 4) {
        // A 4-row group's subtile s is 4 rows × 4 panel rows (4s..4s+3); rows 2h, 2h+1 fill its floats 8h..8h+7.
        for (int h = 0; h < 2; ++h) {
          const __m256 scale = tile_scale(g, r + 2 * h, 4, ws);
          for (int s = 0; s < 4; ++s)
            tile8<2>(g.a + (r + 2 * h) * g.lda, g.lda, wp + 4 * s * kBlockK, g.kn, scale, cp + 16 * r + 16 * s + 8 * h);
        }
        r += 4;
      } else if (left >= 2) {
        // Subtile s is 2 rows × 8 panel rows (8s..8s+7); row i fills its floats 8i..8i+7.
        for (int i = 0; i < 2; ++i) {
          const __m256 scale = tile_scale(g, r + i, 8, ws);
          for (int s = 0; s < 2; ++s)
            tile8<1>(g.a + (r + i) * g.lda, g.lda, wp + 8 * s * kBlockK, g.kn, scale, cp + 16 * r + 16 * s + 8 * i);
        }
        r += 2;
      } else {
        const __m256 scale = tile_scale(g, r, 8, ws);
        for (int s = 0; s < 2; ++s)
          tile8<1>(g.a + r * g.lda, g.lda, wp + 8 * s * kBlockK, g.kn, scale, cp + 16 * r + 8 * s);
        r += 1;
      }
    }
  }
}

void decode_block_avx2(const DecodeArgs& d) {
  const int64_t total_rows = int64_t(d.n_panels) * kPanelRows;
  alignas(32) uint8_t tail8[kBlockK * 4];
  for (int64_t r = 0; r < total_rows; ++r) {
    float* out = d.wbuf + r * kBlockK;
    if (r >= d.rows) {
      for (int c = 0; c < kBlockK; c += 8) _mm256_storeu_ps(out + c, _mm256_setzero_ps());
      continue;
    }
    const int64_t off = (d.row0 + r) * d.k + d.col0;
    const size_t elem = d.dtype == DType::F8_E4M3 ? 1 : d.dtype == DType::BF16 ? 2 : 4;
    const uint8_t* src = static_cast<const uint8_t*>(d.data) + size_t(off) * elem;
    if (d.kn < kBlockK) {  // partial last block: zero-pad a copy
      std::memset(tail8, 0, sizeof tail8);
      std::memcpy(tail8, src, size_t(d.kn) * elem);
      src = tail8;
    }
    if (d.dtype == DType::F8_E4M3) {
      // e4m3 → fp16 bits (value q·2^-8): sign-extend to 16 bits, shift up by 7, mask 0xBF80 (gemm_avx512.cpp).
      const __m256i mask = _mm256_set1_epi16(int16_t(0xBF80));
      for (int c = 0; c < kBlockK; c += 16) {
        __m256i h = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + c)));
        h = _mm256_and_si256(_mm256_slli_epi16(h, 7), mask);
        _mm256_storeu_ps(out + c, _mm256_cvtph_ps(_mm256_castsi256_si128(h)));
        _mm256_storeu_ps(out + c + 8, _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)));
      }
    } else if (d.dtype == DType::BF16) {
      for (int c = 0; c < kBlockK; c += 8) {
        __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * c)));
        _mm256_storeu_ps(out + c, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
      }
    } else {
      std::memcpy(out, src, kBlockK * sizeof(float));
    }
  }
}

}  // namespace deepmoe::gemm_detail
