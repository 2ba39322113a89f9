// AVX-512 inner kernels (built with -march=x86-64-v4; entered only when cpu_features().level >= Avx512).
// Only raw loops, intrinsics and templates in the anonymous namespace here (see core/dtype_bulk_avx2.cpp).
//
// A tile is 16 outputs (MR rows × 16/MR panel rows, MR = 4, 2, 1), one zmm accumulator per output whose lane l
// sums k ≡ l (mod 16) of the block. reduce16 turns the 16 accumulators into one zmm of the 16 block partials with
// the tree of gemm.h (pairs l, l+8; then +4, +2, +1) — the same arithmetic gemm_avx2.cpp does — and the partials
// are promoted into cacc with one FMA.
#include <immintrin.h>

#include <cstring>

#include "kernels/gemm_kernels.h"

namespace deepmoe::gemm_detail {
namespace {

// Out lane 4q + r holds the sum of acc[q + 4r]; so slot t must hold the output of natural lane 4(t%4) + t/4.
__attribute__((always_inline)) inline
__m512 reduce16(const __m512* acc) {
  __m512 b[8], c[4], d[2];
  for (int u = 0; u < 8; ++u)  // lanes l + l+8: [A2u.lo256 | A2u+1.lo256] + [A2u.hi256 | A2u+1.hi256]
    b[u] = _mm512_add_ps(_mm512_shuffle_f32x4(acc[2 * u], acc[2 * u + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_f32x4(acc[2 * u], acc[2 * u + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  for (int v = 0; v < 4; ++v)  // + l+4: each 128-bit quarter becomes one output's 4 partial lanes
    c[v] = _mm512_add_ps(_mm512_shuffle_f32x4(b[2 * v], b[2 * v + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(b[2 * v], b[2 * v + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  for (int w = 0; w < 2; ++w)  // + l+2
    d[w] = _mm512_add_ps(_mm512_shuffle_ps(c[2 * w], c[2 * w + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(c[2 * w], c[2 * w + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  // + l+1
  return _mm512_add_ps(_mm512_shuffle_ps(d[0], d[1], _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_ps(d[0], d[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

template <int MR>
__attribute__((always_inline)) inline
void tile16(const float* a, int64_t lda, const float* w, int kn, __m512 scale, float* cacc) {
  constexpr int NR = 16 / MR;
  __m512 acc[16];
  for (int t = 0; t < 16; ++t) acc[t] = _mm512_setzero_ps();
  const int steps = (kn + 15) / 16;
  const __mmask16 tail = __mmask16((kn % 16) ? (1u << (kn % 16)) - 1 : 0xFFFFu);
  for (int s = 0; s < steps; ++s) {
    const __mmask16 mask = s == steps - 1 ? tail : __mmask16(0xFFFF);
    __m512 av[MR], wv[NR];
    for (int i = 0; i < MR; ++i) av[i] = _mm512_maskz_loadu_ps(mask, a + i * lda + 16 * s);
    for (int j = 0; j < NR; ++j) wv[j] = _mm512_loadu_ps(w + j * kBlockK + 16 * s);
    for (int t = 0; t < 16; ++t) {
      const int l = 4 * (t % 4) + t / 4;
      acc[t] = _mm512_fmadd_ps(av[l / NR], wv[l % NR], acc[t]);
    }
  }
  _mm512_storeu_ps(cacc, _mm512_fmadd_ps(reduce16(acc), scale, _mm512_loadu_ps(cacc)));
}

template <int MR>
void row_group(const KbArgs& g, int64_t r) {
  constexpr int NR = 16 / MR;
  const float* a = g.a + r * g.lda;
  for (int p = 0; p < g.n_panels; ++p) {
    const float ws = g.w_scale[p];
    // Lane ℓ of a tile belongs to row ℓ / NR.
    alignas(64) float sc[16];
    for (int l = 0; l < 16; ++l) sc[l] = g.a_scale ? g.a_scale[(r + l / NR) * g.a_scale_stride] * ws : ws;
    const __m512 scale = _mm512_load_ps(sc);
    const float* wp = g.wbuf + int64_t(p) * kPanelRows * kBlockK;
    float* cp = g.cacc + int64_t(p) * g.rows * 16 + 16 * r;
    for (int s = 0; s < MR; ++s) tile16<MR>(a, g.lda, wp + s * NR * kBlockK, g.kn, scale, cp + 16 * s);
  }
}

}  // namespace

void kb_update_avx512(const KbArgs& g) {
  for (int64_t r = 0; r < g.rows;) {
    const int64_t left = g.rows - r;
    if (left >= 4) {
      row_group<4>(g, r);
      r += 4;
    } else if (left >= 2) {
      row_group<2>(g, r);
      r += 2;
    } else {
      row_group<1>(g, r);
      r += 1;
    }
  }
}

void decode_block_avx512(const DecodeArgs& d) {
  const int64_t total_rows = int64_t(d.n_panels) * kPanelRows;
  alignas(64) uint8_t tail8[kBlockK * 4];
  for (int64_t r = 0; r < total_rows; ++r) {
    float* out = d.wbuf + r * kBlockK;
    if (r >= d.rows) {
      for (int c = 0; c < kBlockK; c += 16) _mm512_storeu_ps(out + c, _mm512_setzero_ps());
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
      // e4m3 → fp16 bits: sign to bit 15, exponent+mantissa up by 7. Sign-extending to 16 bits and masking
      // with 0xBF80 does both (the extension's copy of the sign at bit 14 is masked off). Value = q·2^-8.
      const __m512i mask = _mm512_set1_epi16(int16_t(0xBF80));
      for (int c = 0; c < kBlockK; c += 32) {
        __m512i h = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + c)));
        h = _mm512_and_si512(_mm512_slli_epi16(h, 7), mask);
        _mm512_storeu_ps(out + c, _mm512_cvtph_ps(_mm512_castsi512_si256(h)));
        _mm512_storeu_ps(out + c + 16, _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1)));
      }
    } else if (d.dtype == DType::BF16) {
      for (int c = 0; c < kBlockK; c += 16) {
        __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 2 * c)));
        _mm512_storeu_ps(out + c, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
      }
    } else {
      std::memcpy(out, src, kBlockK * sizeof(float));
    }
  }
}

}  // namespace deepmoe::gemm_detail
