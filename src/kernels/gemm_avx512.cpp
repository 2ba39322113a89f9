// AVX-512 inner kernels (built with -march=x86-64-v4; entered only when cpu_features().level >= Avx512).
// Only raw loops, intrinsics and templates in the anonymous namespace here (see core/dtype_bulk_avx2.cpp).
//
// One zmm holds one output's 16 lanes (gemm.h), so no kernel reduces across lanes until the very end:
// - gemv_rows: R W rows × M A rows of partial and promoted accumulators stay in registers for the whole of K; W
//   rows are decoded 32 (FP8) or 16 values at a time straight into registers, and A comes from L1. From 5 A rows
//   on (batched decode), passes of 4 A rows × 4 W rows with the promoted accumulators in L1 (gemv_pass).
// - block_update: MR A rows × 4 W rows register tiles over each K block of the decoded panel chunk, promoted into
//   the tile's lane accumulators (L1-resident while the tile walks the chunk's blocks).
// The last, partial step of a block uses masked FMAs, so lanes past the block's end keep their value exactly.
#include <immintrin.h>

#include <cstring>
#include <type_traits>

#include "kernels/gemm_kernels.h"
#include "kernels/gemm_lanes_avx512.h"


// GCC 12's AVX-512 headers build some intrinsics from a deliberately undefined vector ("__Y = __Y"), which
// -Wuninitialized reports once they are inlined here; the lanes in question are always overwritten.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace deepmoe::gemm_detail {
namespace {

// e4m3 → fp16 bits: sign to bit 15, exponent+mantissa up by 7. Sign-extending to 16 bits and masking with 0xBF80
// does both (the extension's copy of the sign at bit 14 is masked off). Value = q·2^-8.
__attribute__((always_inline)) inline
__m512i e4m3_to_f16_bits(__m256i bytes) {
  const __m512i h = _mm512_cvtepi8_epi16(bytes);
  return _mm512_and_si512(_mm512_slli_epi16(h, 7), _mm512_set1_epi16(int16_t(0xBF80)));
}

// The same tree for 16 outputs at once, as vertical adds of transposed halves: out lane 4q + r holds the tree
// over acc[q + 4r], so slot t must hold output 4(t % 4) + t / 4.
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

// Loads W values [k, k + 16·kSteps) of one row as kSteps vectors; `mask` selects valid k of a partial step (only
// used by the partial path, where kSteps is 1).
template <DType D>
struct WRow;

template <>
struct WRow<DType::F8_E4M3> {
  static constexpr int kSteps = 2;
  static constexpr int kBytes = 1;
  __attribute__((always_inline)) static void load(const void* row, int64_t k, __m512* wv) {
    const __m512i h = e4m3_to_f16_bits(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(
        static_cast<const uint8_t*>(row) + k)));
    wv[0] = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
    wv[1] = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1));
  }
  __attribute__((always_inline)) static __m512 load_masked(const void* row, int64_t k, __mmask16 mask) {
    const __m128i b = _mm_maskz_loadu_epi8(mask, static_cast<const uint8_t*>(row) + k);
    const __m512i h = e4m3_to_f16_bits(_mm256_castsi128_si256(b));
    return _mm512_cvtph_ps(_mm512_castsi512_si256(h));
  }
};

template <>
struct WRow<DType::BF16> {
  static constexpr int kSteps = 1;
  static constexpr int kBytes = 2;
  __attribute__((always_inline)) static __m512 widen(__m256i v) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
  }
  __attribute__((always_inline)) static void load(const void* row, int64_t k, __m512* wv) {
    wv[0] = widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(row) + k)));
  }
  __attribute__((always_inline)) static __m512 load_masked(const void* row, int64_t k, __mmask16 mask) {
    return widen(_mm256_maskz_loadu_epi16(mask, static_cast<const uint16_t*>(row) + k));
  }
};

template <>
struct WRow<DType::F32> {
  static constexpr int kSteps = 1;
  static constexpr int kBytes = 4;
  __attribute__((always_inline)) static void load(const void* row, int64_t k, __m512* wv) {
    wv[0] = _mm512_loadu_ps(static_cast<const float*>(row) + k);
  }
  __attribute__((always_inline)) static __m512 load_masked(const void* row, int64_t k, __mmask16 mask) {
    return _mm512_maskz_loadu_ps(mask, static_cast<const float*>(row) + k);
  }
};

// R consecutive W rows (inside one 16-row panel, so one scale block) against M rows of A, all of K.
template <DType D, int M, int R>
void gemv_group(const GemvArgs& g, int64_t row) {
  using L = WRow<D>;
  const WeightMatrix& w = *g.w;
  const int64_t k = w.k, kb_count = (k + kBlockK - 1) / kBlockK;
  const uint8_t* wrow[R];
  for (int r = 0; r < R; ++r) wrow[r] = static_cast<const uint8_t*>(w.data) + (row + r) * k * L::kBytes;
  __m512 acc[M][R];
  for (int i = 0; i < M; ++i)
    for (int r = 0; r < R; ++r) acc[i][r] = _mm512_setzero_ps();
  // Where to prefetch while the group works on a block: kGemvPrefetchBytes further along each row's slot of the
  // task's stream — past the row's end that is the same slot of the next group (R rows down), i.e. column
  // `ahead_col` of the row `ahead_groups` groups down (carried from block to block without a division). The rows are
  // R separate streams, more than the hardware prefetcher follows well, and without wrapping every group would
  // start R streams cold (most of the loss on K ≤ 2048 shapes).
  int64_t ahead_groups = (kGemvPrefetchBytes / L::kBytes) / k, ahead_col = (kGemvPrefetchBytes / L::kBytes) % k;
  for (int64_t kb = 0; kb < kb_count; ++kb, ahead_col += kBlockK) {
    const int64_t k0 = kb * kBlockK;
    const int kn = k - k0 < kBlockK ? int(k - k0) : kBlockK;
    __m512 p[M][R];
    for (int i = 0; i < M; ++i)
      for (int r = 0; r < R; ++r) p[i][r] = _mm512_setzero_ps();
    {
      for (; ahead_col >= k; ahead_col -= k) ++ahead_groups;
      const int64_t offset = (ahead_groups * R * k + ahead_col) * L::kBytes;
      for (int r = 0; r < R; ++r)
        for (int line = 0; line < kBlockK * L::kBytes; line += 64)
          _mm_prefetch(reinterpret_cast<const char*>(wrow[r] + offset + line), _MM_HINT_T0);
    }
    const int full = kn / (16 * L::kSteps) * (16 * L::kSteps);
    for (int c = 0; c < full; c += 16 * L::kSteps) {
      for (int r = 0; r < R; ++r) {
        __m512 wv[L::kSteps];
        L::load(wrow[r], k0 + c, wv);
        for (int s = 0; s < L::kSteps; ++s)
          for (int i = 0; i < M; ++i)
            p[i][r] = _mm512_fmadd_ps(_mm512_loadu_ps(g.a + i * k + k0 + c + 16 * s), wv[s], p[i][r]);
      }
    }
    for (int c = full; c < kn; c += 16) {
      const int left = kn - c;
      const __mmask16 mask = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
      for (int r = 0; r < R; ++r) {
        const __m512 wv = L::load_masked(wrow[r], k0 + c, mask);
        for (int i = 0; i < M; ++i)
          p[i][r] = _mm512_mask3_fmadd_ps(_mm512_maskz_loadu_ps(mask, g.a + i * k + k0 + c), wv, p[i][r], mask);
      }
    }
    const float ws = D == DType::F8_E4M3 ? w.scale_inv[(row / kBlockK) * kb_count + kb] * 256.0f : 1.0f;
    for (int i = 0; i < M; ++i) {
      const __m512 s = _mm512_set1_ps(g.a_scale ? g.a_scale[i * kb_count + kb] * ws : ws);
      for (int r = 0; r < R; ++r) acc[i][r] = _mm512_fmadd_ps(p[i][r], s, acc[i][r]);
    }
  }
  for (int i = 0; i < M; ++i) {
    if constexpr (R % 4 == 0) {
      for (int r = 0; r < R; r += 4) reduce4(&acc[i][r], g.c + i * w.n + row + r);
    } else {
      for (int r = 0; r < R; ++r) g.c[i * w.n + row + r] = sum_lanes16(acc[i][r]);
    }
  }
}

// W values [k, k + 16) of one row as one FP32 vector (FP8 decoded 16 at a time).
template <DType D>
__attribute__((always_inline)) inline __m512 load_w16(const void* row, int64_t k) {
  if constexpr (D == DType::F8_E4M3) {
    const __m256i h = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(
        static_cast<const uint8_t*>(row) + k)));
    return _mm512_cvtph_ps(_mm256_and_si256(_mm256_slli_epi16(h, 7), _mm256_set1_epi16(int16_t(0xBF80))));
  } else if constexpr (D == DType::BF16) {
    return WRow<DType::BF16>::widen(_mm256_loadu_si256(
        reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(row) + k)));
  } else {
    return _mm512_loadu_ps(static_cast<const float*>(row) + k);
  }
}

// Many A rows: A rows [i0, i0 + MP) against W rows [row, row + R), all of K; the caller runs it pass after pass
// over the same R W rows (the later passes find them in L1/L2). Per 16-wide step the MP A vectors are loaded once
// and each W row's values are decoded once and serve them all: R·MP FMAs per MP + R loads, so A — which with more
// than 4 rows no longer fits L1 — is read from L2 at a rate the FMAs can keep up with. The promoted accumulators
// live in L1 (touched once per 128-wide block). Same order as gemv_group: per lane one FMA chain per block from
// zero, promoted once per block in increasing kb, then the tree.
template <DType D, int MP, int R>
void gemv_pass(const GemvArgs& g, int64_t row, int64_t i0, bool prefetch) {
  using L = WRow<D>;
  const WeightMatrix& w = *g.w;
  const int64_t k = w.k, kb_count = (k + kBlockK - 1) / kBlockK;
  const uint8_t* wrow[R];
  for (int r = 0; r < R; ++r) wrow[r] = static_cast<const uint8_t*>(w.data) + (row + r) * k * L::kBytes;
  const float* a = g.a + i0 * k;
  alignas(64) float acc[MP][R][16];
  for (int i = 0; i < MP; ++i)
    for (int r = 0; r < R; ++r) _mm512_store_ps(acc[i][r], _mm512_setzero_ps());
  int64_t ahead_groups = (kGemvPrefetchBytes / L::kBytes) / k, ahead_col = (kGemvPrefetchBytes / L::kBytes) % k;
  for (int64_t kb = 0; kb < kb_count; ++kb, ahead_col += kBlockK) {
    const int64_t k0 = kb * kBlockK;
    const int kn = k - k0 < kBlockK ? int(k - k0) : kBlockK;
    __m512 p[MP][R];
    for (int i = 0; i < MP; ++i)
      for (int r = 0; r < R; ++r) p[i][r] = _mm512_setzero_ps();
    if (prefetch) {
      for (; ahead_col >= k; ahead_col -= k) ++ahead_groups;
      const int64_t offset = (ahead_groups * R * k + ahead_col) * L::kBytes;
      for (int r = 0; r < R; ++r)
        for (int line = 0; line < kBlockK * L::kBytes; line += 64)
          _mm_prefetch(reinterpret_cast<const char*>(wrow[r] + offset + line), _MM_HINT_T0);
    }
    const int full = kn / 16 * 16;
    for (int c = 0; c < full; c += 16) {
      __m512 wv[R];
      for (int r = 0; r < R; ++r) wv[r] = load_w16<D>(wrow[r], k0 + c);
      for (int i = 0; i < MP; ++i) {
        const __m512 av = _mm512_loadu_ps(a + i * k + k0 + c);
        for (int r = 0; r < R; ++r) p[i][r] = _mm512_fmadd_ps(av, wv[r], p[i][r]);
      }
    }
    if (full < kn) {
      const __mmask16 mask = __mmask16((1u << (kn - full)) - 1);
      __m512 av[MP];
      for (int i = 0; i < MP; ++i) av[i] = _mm512_maskz_loadu_ps(mask, a + i * k + k0 + full);
      for (int r = 0; r < R; ++r) {
        const __m512 wv = L::load_masked(wrow[r], k0 + full, mask);
        for (int i = 0; i < MP; ++i) p[i][r] = _mm512_mask3_fmadd_ps(av[i], wv, p[i][r], mask);
      }
    }
    const float ws = D == DType::F8_E4M3 ? w.scale_inv[(row / kBlockK) * kb_count + kb] * 256.0f : 1.0f;
    for (int i = 0; i < MP; ++i) {
      const __m512 s = _mm512_set1_ps(g.a_scale ? g.a_scale[(i0 + i) * kb_count + kb] * ws : ws);
      for (int r = 0; r < R; ++r)
        _mm512_store_ps(acc[i][r], _mm512_fmadd_ps(p[i][r], s, _mm512_load_ps(acc[i][r])));
    }
  }
  for (int i = 0; i < MP; ++i) {
    float* out = g.c + (i0 + i) * w.n + row;
    int r = 0;
    for (; r + 4 <= R; r += 4) {
      const __m512 v[4] = {_mm512_load_ps(acc[i][r]), _mm512_load_ps(acc[i][r + 1]), _mm512_load_ps(acc[i][r + 2]),
                           _mm512_load_ps(acc[i][r + 3])};
      reduce4(v, out + r);
    }
    for (; r < R; ++r) out[r] = sum_lanes16(_mm512_load_ps(acc[i][r]));
  }
}

// All of A's rows against W rows [row, row + R): passes of kPassRows rows, then one of the rest. (6 or 8 rows per
// pass, with 4 or 3 W rows, measured slower: more of A per pass than L1 holds next to the W rows.)
constexpr int kPassRows = 4;
template <DType D, int MP, int R>
void gemv_last_pass(const GemvArgs& g, int64_t row, int64_t i0, int rest) {
  if constexpr (MP > 0) {
    if (rest == MP) return gemv_pass<D, MP, R>(g, row, i0, i0 == 0);
    gemv_last_pass<D, MP - 1, R>(g, row, i0, rest);
  }
}

template <DType D, int R>
void gemv_group_passes(const GemvArgs& g, int64_t row) {
  int64_t i0 = 0;
  for (; g.m - i0 >= kPassRows; i0 += kPassRows) gemv_pass<D, kPassRows, R>(g, row, i0, i0 == 0);
  gemv_last_pass<D, kPassRows - 1, R>(g, row, i0, int(g.m - i0));
}

// The last rows < R of the task, as one group.
template <DType D, int R>
void gemv_rest_rows(const GemvArgs& g, int64_t row, int rest) {
  if constexpr (R > 0) {
    if (rest == R) return gemv_group_passes<D, R>(g, row);
    gemv_rest_rows<D, R - 1>(g, row, rest);
  }
}

template <DType D>
void gemv_many(const GemvArgs& g) {
  constexpr int R = 4;
  int64_t j = 0;
  for (; g.rows - j >= R; j += R) gemv_group_passes<D, R>(g, g.row0 + j);
  gemv_rest_rows<D, R - 1>(g, g.row0 + j, int(g.rows - j));
}

template <DType D, int M>
void gemv_dtype(const GemvArgs& g) {
  // M·R partial + M·R promoted accumulators within 32 registers. At M = 1 eight rows are in flight: the rows are
  // separate memory streams, and eight keep more misses outstanding than four (FP8 from DRAM on two threads: q_b
  // 24576×1536 40 → 54 GB/s, 7168×2048 47 → 55; BF16 lm_head ~+5–10%). In cache it makes no difference.
  constexpr int R = M == 1 ? 8 : M <= 2 ? 4 : M <= 4 ? 2 : 1;
  int64_t j = 0;
  for (; g.rows - j >= R; j += R) gemv_group<D, M, R>(g, g.row0 + j);
  for (; j < g.rows; ++j) gemv_group<D, M, 1>(g, g.row0 + j);
}

template <DType D>
void gemv_m(const GemvArgs& g) {
  if (g.m > 4) return gemv_many<D>(g);
  switch (g.m) {
    case 1: gemv_dtype<D, 1>(g); break;
    case 2: gemv_dtype<D, 2>(g); break;
    case 3: gemv_dtype<D, 3>(g); break;
    default: gemv_dtype<D, 4>(g); break;
  }
}

// How a decoded panel holds its values: FP32, or 16-bit patterns widened exactly on load.
enum class Panel { F32, F16, BF16 };

template <Panel P>
using PanelElem = std::conditional_t<P == Panel::F32, float, uint16_t>;

template <Panel P>
__attribute__((always_inline)) inline __m512 load_panel(const PanelElem<P>* p) {
  if constexpr (P == Panel::F32) {
    return _mm512_loadu_ps(p);
  } else {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    if constexpr (P == Panel::F16) return _mm512_cvtph_ps(h);
    else return WRow<DType::BF16>::widen(h);
  }
}

// MR A rows × 4 W rows (wbuf rows j0..j0+3), over each block of the chunk in turn. The tile's lane accumulators
// are loaded once per chunk and stay in registers while every block's partials are promoted into them.
// kFullBlocks: every block of the chunk has all 128 columns (K a multiple of 512, or the chunk before the last),
// so the step loop has a constant trip count the compiler unrolls (~10% faster than the run-time bound).
template <int MR, bool kFullBlocks, Panel P>
__attribute__((always_inline)) inline
void tile(const BlockArgs& g, const PanelElem<P>* wbuf, int64_t r, int j0) {
  constexpr int NR = 4;
  __m512 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j)
      acc[i][j] = g.first_chunk ? _mm512_setzero_ps()
                                : _mm512_loadu_ps(g.lacc + ((r + i) * kPanelRows + j0 + j) * kLanes);
  for (int b = 0; b < g.n_blocks; ++b) {
    const int kn = kFullBlocks || b != g.n_blocks - 1 ? kBlockK : g.kn_last;
    const float* a = g.a + r * g.lda + b * kBlockK;
    const PanelElem<P>* w = wbuf + j0 * g.ldw + b * kBlockK;
    __m512 p[MR][NR];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) p[i][j] = _mm512_setzero_ps();
    const int full = kn / 16 * 16;
    for (int c = 0; c < full; c += 16) {
      __m512 av[MR];
      for (int i = 0; i < MR; ++i) av[i] = _mm512_loadu_ps(a + i * g.lda + c);
      for (int j = 0; j < NR; ++j) {
        __m512 wv = load_panel<P>(w + j * g.ldw + c);
        // Keep wv in a register: folded into each FMA as a memory operand it would be loaded MR times, and the
        // load ports, not the FMA pipes, would set the pace.
        asm("" : "+v"(wv));
        for (int i = 0; i < MR; ++i) p[i][j] = _mm512_fmadd_ps(av[i], wv, p[i][j]);
      }
    }
    if (full < kn) {
      const __mmask16 mask = __mmask16((1u << (kn - full)) - 1);
      __m512 av[MR];
      for (int i = 0; i < MR; ++i) av[i] = _mm512_maskz_loadu_ps(mask, a + i * g.lda + full);
      for (int j = 0; j < NR; ++j) {
        const __m512 wv = load_panel<P>(w + j * g.ldw + full);
        for (int i = 0; i < MR; ++i) p[i][j] = _mm512_mask3_fmadd_ps(av[i], wv, p[i][j], mask);
      }
    }
    for (int i = 0; i < MR; ++i) {
      const float ws = g.w_scale[b];
      const __m512 s = _mm512_set1_ps(g.a_scale ? g.a_scale[(r + i) * g.a_scale_stride + b] * ws : ws);
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_fmadd_ps(p[i][j], s, acc[i][j]);
    }
  }
  if (g.c) {
    for (int i = 0; i < MR; ++i) {
      float out[NR];
      reduce4(acc[i], out);
      for (int j = 0; j < NR && j0 + j < g.c_cols; ++j) g.c[(r + i) * g.ldc + j0 + j] = out[j];
    }
    return;
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) _mm512_storeu_ps(g.lacc + ((r + i) * kPanelRows + j0 + j) * kLanes, acc[i][j]);
}

template <int MR, Panel P>
void row_group(const BlockArgs& g, const PanelElem<P>* wbuf, int64_t r) {
  if (g.kn_last == kBlockK)
    for (int j0 = 0; j0 < kPanelRows; j0 += 4) tile<MR, true, P>(g, wbuf, r, j0);
  else
    for (int j0 = 0; j0 < kPanelRows; j0 += 4) tile<MR, false, P>(g, wbuf, r, j0);
}

template <Panel P>
void block_update_panel(const BlockArgs& g, const PanelElem<P>* wbuf) {
  // Row groups of 3, but a remainder of 1 becomes 2 + 2: a 1-row tile loads as many W vectors as it does FMAs and
  // runs at half the rate (8% of a 16-row expert's time as one 1-row group).
  int64_t r = 0;
  const int64_t threes = g.rows % 3 == 1 && g.rows >= 4 ? g.rows / 3 - 1 : g.rows / 3;
  for (; r < 3 * threes; r += 3) row_group<3, P>(g, wbuf, r);
  for (; g.rows - r >= 2; r += 2) row_group<2, P>(g, wbuf, r);
  if (r < g.rows) row_group<1, P>(g, wbuf, r);
}

// The 16-bit form of decode_block_avx512 (DecodeArgs::wbuf_half): F8_E4M3 to FP16 bit patterns, BF16 copied.
// Whole 64-byte stores: the panel is 64-byte aligned and its rows (ldw halves) a multiple of 32 halves long.
static_assert(kChunkBlocks * kBlockK % 32 == 0, "16-bit panel rows must be whole 64-byte lines");
void decode_block_half(const DecodeArgs& d) {
  const bool bf16 = d.dtype == DType::BF16;
  const int64_t elem = bf16 ? 2 : 1;
  for (int64_t r = 0; r < kPanelRows; ++r) {
    uint16_t* out = d.wbuf_half + r * d.ldw;
    int c = 0;
    if (r < d.next_rows)
      for (int64_t b = 0; b < d.next_bytes; b += 64)
        _mm_prefetch(reinterpret_cast<const char*>(d.next + r * d.k * elem + b), _MM_HINT_T0);
    if (r < d.rows) {
      const uint8_t* src = static_cast<const uint8_t*>(d.data) + ((d.row0 + r) * d.k + d.col0) * elem;
      if (bf16) {
        for (; d.kn - c >= 32; c += 32) _mm512_store_si512(out + c, _mm512_loadu_si512(src + 2 * c));
      } else {
        for (; d.kn - c >= 32; c += 32)
          _mm512_store_si512(out + c, e4m3_to_f16_bits(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + c))));
      }
      if (c < d.kn) {
        const __mmask32 mask = __mmask32((uint64_t(1) << (d.kn - c)) - 1);
        _mm512_store_si512(out + c, bf16 ? _mm512_maskz_loadu_epi16(mask, src + 2 * c)
                                         : e4m3_to_f16_bits(_mm256_maskz_loadu_epi8(mask, src + c)));
        c += 32;
      }
    }
    for (; c < d.ldw; c += 32) _mm512_store_si512(out + c, _mm512_setzero_si512());
  }
}

}  // namespace

void reduce_lanes_avx512(const float* lanes, int n, float* out) {
  if (n == 16) {
    __m512 acc[16];
    for (int t = 0; t < 16; ++t) acc[t] = _mm512_loadu_ps(lanes + (4 * (t % 4) + t / 4) * kLanes);
    _mm512_storeu_ps(out, reduce16(acc));
    return;
  }
  for (int j = 0; j < n; ++j) out[j] = sum_lanes16(_mm512_loadu_ps(lanes + j * kLanes));
}

void gemv_rows_avx512(const GemvArgs& g) {
  switch (g.w->dtype) {
    case DType::F8_E4M3: gemv_m<DType::F8_E4M3>(g); break;
    case DType::BF16: gemv_m<DType::BF16>(g); break;
    default: gemv_m<DType::F32>(g); break;
  }
}

void block_update_avx512(const BlockArgs& g) {
  if (g.wbuf_half && g.half_is_bf16)
    block_update_panel<Panel::BF16>(g, g.wbuf_half);
  else if (g.wbuf_half)
    block_update_panel<Panel::F16>(g, g.wbuf_half);
  else
    block_update_panel<Panel::F32>(g, g.wbuf);
}

// FP8 and BF16 weights always come as 16-bit panels on this ISA (Isa::half_panel), so the FP32 panel only ever
// holds F32 weights: a copy, zero past the valid columns.
void decode_block_avx512(const DecodeArgs& d) {
  if (d.wbuf_half) return decode_block_half(d);
  for (int64_t r = 0; r < kPanelRows; ++r) {
    float* out = d.wbuf + r * d.ldw;
    int c = 0;
    if (r < d.next_rows)
      for (int64_t b = 0; b < d.next_bytes; b += 64)
        _mm_prefetch(reinterpret_cast<const char*>(d.next + r * d.k * 4 + b), _MM_HINT_T0);
    if (r < d.rows) {
      const float* src = static_cast<const float*>(d.data) + (d.row0 + r) * d.k + d.col0;
      for (; c < d.kn; c += 16) {
        const int left = d.kn - c;
        const __mmask16 mask = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
        _mm512_storeu_ps(out + c, _mm512_maskz_loadu_ps(mask, src + c));
      }
    }
    for (; c < d.ldw; c += 16) _mm512_storeu_ps(out + c, _mm512_setzero_ps());
  }
}

}  // namespace deepmoe::gemm_detail
