// The BF16 dot-product order of gemm.h on AVX-512 with AVX512_BF16 (vdpbf16ps) and AVX512_VBMI (byte tables).
// Only raw loops, intrinsics and templates in the anonymous namespace here (see core/dtype_bulk_avx2.cpp).
//
// Each vdpbf16ps adds 32 exact products into 16 FP32 lanes — twice the products of an FP32 FMA — so the W8A8 and
// W8A16 products run at up to twice the FP32 rate. The weights reach it as exact BF16 values, decoded from e4m3 by
// two 128-entry byte tables (vpermi2b: high and low byte of each BF16 value, the sign ORed in), 64 codes per step,
// or loaded as they are (BF16 weights, W8A16). F8_E4M3 weights promote each block's partial by its scale; BF16
// weights run one chain per lane over all of K (gemm.h), so their kernels keep half the accumulators.
// - gemv_rows: R W rows × M A rows, partial and promoted accumulators in registers for the whole of K, W decoded
//   straight into registers (decode-shaped calls, M ≤ 4; BF16 weights also 5–8 rows, as two passes per group of
//   W rows, the second on W rows still in L1).
// - block_update: MR A rows × 4 W rows register tiles over the decoded BF16 panel chunk, as in gemm_avx512.cpp.
// Every path runs the same instruction sequence per output (32 k per step, blocks of 128, promotion per block), so
// the bits do not depend on the path, the tile or the thread.
#include <immintrin.h>

#include <array>
#include <cstdint>

#include "kernels/gemm_kernels.h"
#include "kernels/gemm_lanes_avx512.h"

#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace deepmoe::gemm_detail {
namespace {

// BF16 bits of the e4m3 magnitude `code` (0..127); the NaN code 0x7F reads as 480 like in every path (gemm.h).
constexpr uint16_t e4m3_magnitude_bf16(int code) {
  const int e = code >> 3, man = code & 7;
  if (e != 0) return uint16_t((e + 120) << 7 | man << 4);
  if (man == 0) return 0;
  const int top = man >= 4 ? 2 : man >= 2 ? 1 : 0;  // man·2^-9 = 2^(top-9) · (1 + (man - 2^top) / 2^top)
  return uint16_t((118 + top) << 7 | (man - (1 << top)) << (7 - top));
}

struct ByteTables {
  alignas(64) std::array<uint8_t, 128> hi{}, lo{};
  alignas(64) std::array<uint8_t, 64> order{};
};

constexpr ByteTables make_tables() {
  ByteTables t;
  for (int c = 0; c < 128; ++c) {
    t.hi[size_t(c)] = uint8_t(e4m3_magnitude_bf16(c) >> 8);
    t.lo[size_t(c)] = uint8_t(e4m3_magnitude_bf16(c) & 0xFF);
  }
  // unpacklo/hi_epi8 interleave bytes 0–7 / 8–15 of each 128-bit lane: place codes so that the low result holds
  // codes 0–31 in order and the high one 32–63.
  for (int lane = 0; lane < 4; ++lane)
    for (int j = 0; j < 8; ++j) {
      t.order[size_t(16 * lane + j)] = uint8_t(8 * lane + j);
      t.order[size_t(16 * lane + 8 + j)] = uint8_t(32 + 8 * lane + j);
    }
  return t;
}

constexpr ByteTables kTables = make_tables();

// The registers the decode keeps live.
struct Decoder {
  __m512i hi0, hi1, lo0, lo1, order, sign;
  __attribute__((always_inline)) Decoder()
      : hi0(_mm512_load_si512(kTables.hi.data())),
        hi1(_mm512_load_si512(kTables.hi.data() + 64)),
        lo0(_mm512_load_si512(kTables.lo.data())),
        lo1(_mm512_load_si512(kTables.lo.data() + 64)),
        order(_mm512_load_si512(kTables.order.data())),
        sign(_mm512_set1_epi8(int8_t(0x80))) {}
  // 64 e4m3 codes → BF16 values of codes 0–31 (out[0]) and 32–63 (out[1]), in order.
  __attribute__((always_inline)) void decode(__m512i codes, __m512i* out) const {
    const __m512i p = _mm512_permutexvar_epi8(order, codes);
    __m512i hi = _mm512_permutex2var_epi8(hi0, p, hi1);
    const __m512i lo = _mm512_permutex2var_epi8(lo0, p, lo1);
    hi = _mm512_ternarylogic_epi32(hi, p, sign, 0xF8);  // hi | (p & 0x80)
    out[0] = _mm512_unpacklo_epi8(lo, hi);
    out[1] = _mm512_unpackhi_epi8(lo, hi);
  }
};

__attribute__((always_inline)) inline __m512 dot(__m512 acc, __m512i a, __m512i w) {
  return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)w);
}

// 32 BF16 values (k = 0..31 of a group) → FP32 at out[0..16) the odd k (1, 3, .., 31) and out[16..32) the even k:
// the split form of tile<..., kFp32 = true>.
__attribute__((always_inline)) inline void split_pairs(__m512i v, float* out) {
  _mm512_storeu_ps(out, _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(int(0xFFFF0000u)))));
  _mm512_storeu_ps(out + 16, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
}

__attribute__((always_inline)) inline __m512i load_codes(const uint8_t* p, int left) {
  if (left >= 64) return _mm512_loadu_si512(p);
  return _mm512_maskz_loadu_epi8(__mmask64((uint64_t(1) << left) - 1), p);
}

__attribute__((always_inline)) inline __mmask32 first_n32(int n) {
  return n >= 32 ? __mmask32(0xFFFFFFFFu) : __mmask32((1u << n) - 1);
}

// W values [0, 64) of a row from `p` as two vectors of 32 exact BF16 values (out[1] only where left > 32), zero
// from `left` on.
template <DType D>
struct DotRow;

template <>
struct DotRow<DType::F8_E4M3> {
  static constexpr int kBytes = 1;
  static constexpr bool kBlockScales = true;  // promote each block's partial by its scale (gemm.h)
  __attribute__((always_inline)) static void load(const Decoder& dec, const uint8_t* p, int left, __m512i* out) {
    dec.decode(load_codes(p, left), out);
  }
};

template <>
struct DotRow<DType::BF16> {
  static constexpr int kBytes = 2;
  static constexpr bool kBlockScales = false;  // one chain per lane over all of K (gemm.h)
  __attribute__((always_inline)) static void load(const Decoder&, const uint8_t* p, int left, __m512i* out) {
    const auto* q = reinterpret_cast<const uint16_t*>(p);
    if (left >= 64) {
      out[0] = _mm512_loadu_si512(q);
      out[1] = _mm512_loadu_si512(q + 32);
      return;
    }
    out[0] = _mm512_maskz_loadu_epi16(first_n32(left), q);
    if (left > 32) out[1] = _mm512_maskz_loadu_epi16(first_n32(left - 32), q + 32);
  }
};

// R consecutive W rows (inside one 16-row panel, so one scale block) against M rows of A, all of K.
// kFullBlocks (K a multiple of 128): each row's whole block runs at once (both 64-value steps, then the promotion),
// so a row's partial lives in a register for one block only; the rows' partials need not all stay live through
// the block (at M = 1, R = 8 they did not fit the register file beside the decoder and spilled to the stack every
// step). Rows are independent, so the order across rows changes no bit. On a 2-core Xeon (Emerald Rapids), FP8 at
// M = 1: `gemm_bench --decode-batch` 11–13% less time per product; the 27-layer Moonlight-shaped decode faster in 7
// of 8 alternated pairs, 7–11% more tok/s on the means.
template <DType D, int M, int R, bool kFullBlocks>
void gemv_group(const GemvArgs& g, int64_t row, const Decoder& dec, bool prefetch = true) {
  using L = DotRow<D>;
  const WeightMatrix& w = *g.w;
  const int64_t k = w.k, kb_count = (k + kBlockK - 1) / kBlockK, row_bytes = k * L::kBytes;
  const uint8_t* wrow[R];
  for (int r = 0; r < R; ++r) wrow[r] = static_cast<const uint8_t*>(w.data) + (row + r) * row_bytes;
  __m512 acc[M][R];
  for (int i = 0; i < M; ++i)
    for (int r = 0; r < R; ++r) acc[i][r] = _mm512_setzero_ps();
  // Prefetch as gemm_avx512.cpp's gemv_group: kGemvPrefetchBytes ahead in each row's slot of the task's stream —
  // but each 64-value step's lines (one FP8, two BF16) right before that step's load, not a block's lines for all
  // R rows in one burst at the block's start (16 FP8 or 32 BF16 lines at M = 1), where the later prefetches wait
  // behind the earlier misses. Spread out, the same lines streamed faster at M = 1 on two threads: 530 MB of
  // FP8 rows 2048 wide ~3.5% (faster in 67 of 80 interleaved call pairs), the BF16 lm_head 129280 × 2048 ~1–3%
  // (49 of 80).
  int64_t ahead_groups = kGemvPrefetchBytes / row_bytes, ahead_col = kGemvPrefetchBytes % row_bytes;
  const auto step = [&](int r, int64_t offset, int64_t k0, int c, int kn, __m512* p) {
    if (prefetch)
      for (int line = 0; line < 64 * L::kBytes; line += 64)
        _mm_prefetch(reinterpret_cast<const char*>(wrow[r] + offset + c * L::kBytes + line), _MM_HINT_T0);
    __m512i wv[2];
    L::load(dec, wrow[r] + (k0 + c) * L::kBytes, kn - c, wv);
    const bool second = kFullBlocks || kn - c > 32;
    for (int i = 0; i < M; ++i) {
      const uint16_t* a = g.a_bf16 + i * g.lda_bf16 + k0 + c;
      p[i] = dot(p[i], _mm512_loadu_si512(a), wv[0]);
      if (second) p[i] = dot(p[i], _mm512_loadu_si512(a + 32), wv[1]);
    }
  };
  for (int64_t kb = 0; kb < kb_count; ++kb, ahead_col += kBlockK * L::kBytes) {
    const int64_t k0 = kb * kBlockK;
    const int kn = kFullBlocks || k - k0 >= kBlockK ? kBlockK : int(k - k0);
    for (; ahead_col >= row_bytes; ahead_col -= row_bytes) ++ahead_groups;
    const int64_t offset = ahead_groups * R * row_bytes + ahead_col;
    // The block's partials: from zero (promoted below), or the lane chains themselves (BF16 weights).
    __m512 scale[M];
    if constexpr (L::kBlockScales) {
      const float ws = w.scale_inv[(row / kBlockK) * kb_count + kb];
      for (int i = 0; i < M; ++i) scale[i] = _mm512_set1_ps(g.a_scale ? g.a_scale[i * kb_count + kb] * ws : ws);
    }
    const auto promote = [&](int r, const __m512* p) {
      for (int i = 0; i < M; ++i)
        acc[i][r] = L::kBlockScales ? _mm512_fmadd_ps(p[i], scale[i], acc[i][r]) : p[i];
    };
    if constexpr (kFullBlocks) {
      for (int r = 0; r < R; ++r) {
        __m512 p[M];
        for (int i = 0; i < M; ++i) p[i] = L::kBlockScales ? _mm512_setzero_ps() : acc[i][r];
        step(r, offset, k0, 0, kBlockK, p);
        step(r, offset, k0, 64, kBlockK, p);
        promote(r, p);
      }
    } else {
      __m512 p[R][M];
      for (int r = 0; r < R; ++r)
        for (int i = 0; i < M; ++i) p[r][i] = L::kBlockScales ? _mm512_setzero_ps() : acc[i][r];
      for (int c = 0; c < kn; c += 64)
        for (int r = 0; r < R; ++r) step(r, offset, k0, c, kn, p[r]);
      for (int r = 0; r < R; ++r) promote(r, p[r]);
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

template <DType D, int M>
void gemv_m(const GemvArgs& g) {
  constexpr int R = M == 1 ? 8 : M <= 2 ? 4 : 2;  // as gemm_avx512.cpp: more rows in flight at M = 1
  const Decoder dec;
  int64_t j = 0;
  if (g.w->k % kBlockK == 0) {
    for (; g.rows - j >= R; j += R) gemv_group<D, M, R, true>(g, g.row0 + j, dec);
    for (; j < g.rows; ++j) gemv_group<D, M, 1, true>(g, g.row0 + j, dec);
  } else {
    for (; g.rows - j >= R; j += R) gemv_group<D, M, R, false>(g, g.row0 + j, dec);
    for (; j < g.rows; ++j) gemv_group<D, M, 1, false>(g, g.row0 + j, dec);
  }
}

// MR A rows × 4 W rows (panel rows j0..j0+3) over each block of the chunk; accumulators in registers.
// kBlockScales: promote each block's partial by its scale (F8_E4M3); else the lane chains run on through the
// blocks (BF16 weights, gemm.h).
// kFp32: the same order on FP32 FMAs (BlockArgs::wbuf and ::a in the split form, split_pairs): in each 32-wide
// group the 16 odd k come first, then the 16 even k, so FP32 lane l meets k = 2l+1, then 2l, then 32+2l+1, ... —
// the pairs of vdpbf16ps's lane l in its order. The products are exact in FP32, so fma(a, w, p) adds each with the
// one rounding vdpbf16ps gives it: the same bits, on CPUs where vdpbf16ps runs at less than twice the FMA's rate.
// Only the inner product differs between the two; the promotion and the write-back are shared.
template <int MR, bool kFullBlocks, bool kBlockScales, bool kFp32>
__attribute__((always_inline)) inline void tile(const BlockArgs& g, int64_t r, int j0) {
  constexpr int NR = 4;
  __m512 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j)
      acc[i][j] = g.first_chunk ? _mm512_setzero_ps()
                                : _mm512_loadu_ps(g.lacc + ((r + i) * kPanelRows + j0 + j) * kLanes);
  for (int b = 0; b < g.n_blocks; ++b) {
    const int kn = kFullBlocks || b != g.n_blocks - 1 ? kBlockK : g.kn_last;
    __m512 p[MR][NR];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) p[i][j] = kBlockScales ? _mm512_setzero_ps() : acc[i][j];
    if constexpr (kFp32) {
      const int steps = (kn + 31) / 32 * 2;
      const float* a = g.a + r * g.lda + b * kBlockK;
      const float* w = g.wbuf + j0 * g.ldw + b * kBlockK;
      for (int s = 0; s < steps; ++s) {
        __m512 av[MR];
        for (int i = 0; i < MR; ++i) av[i] = _mm512_loadu_ps(a + i * g.lda + 16 * s);
        for (int j = 0; j < NR; ++j) {
          __m512 wv = _mm512_load_ps(w + j * g.ldw + 16 * s);
          asm("" : "+v"(wv));  // one load per W vector, not one per use (see gemm_avx512.cpp)
          for (int i = 0; i < MR; ++i) p[i][j] = _mm512_fmadd_ps(av[i], wv, p[i][j]);
        }
      }
    } else {
      const int steps = (kn + 31) / 32;
      const uint16_t* a = g.a_bf16 + r * g.lda + b * kBlockK;
      const uint16_t* w = g.wbuf_half + j0 * g.ldw + b * kBlockK;
      for (int s = 0; s < steps; ++s) {
        __m512i av[MR];
        for (int i = 0; i < MR; ++i) av[i] = _mm512_loadu_si512(a + i * g.lda + 32 * s);
        for (int j = 0; j < NR; ++j) {
          __m512i wv = _mm512_load_si512(w + j * g.ldw + 32 * s);
          asm("" : "+v"(wv));  // one load per W vector, not one per use (see gemm_avx512.cpp)
          for (int i = 0; i < MR; ++i) p[i][j] = dot(p[i][j], av[i], wv);
        }
      }
    }
    if constexpr (kBlockScales) {
      const float ws = g.w_scale[b];
      for (int i = 0; i < MR; ++i) {
        const __m512 sc = _mm512_set1_ps(g.a_scale ? g.a_scale[(r + i) * g.a_scale_stride + b] * ws : ws);
        for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_fmadd_ps(p[i][j], sc, acc[i][j]);
      }
    } else {
      for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NR; ++j) acc[i][j] = p[i][j];
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

template <int MR, bool kBlockScales, bool kFp32>
void row_group(const BlockArgs& g, int64_t r) {
  if (g.kn_last == kBlockK) {
    for (int j0 = 0; j0 < kPanelRows; j0 += 4) tile<MR, true, kBlockScales, kFp32>(g, r, j0);
  } else {
    for (int j0 = 0; j0 < kPanelRows; j0 += 4) tile<MR, false, kBlockScales, kFp32>(g, r, j0);
  }
}

template <bool kBlockScales, bool kFp32>
void block_update(const BlockArgs& g) {
  // Row groups of 3, a remainder of 1 as 2 + 2 (see gemm_avx512.cpp).
  int64_t r = 0;
  const int64_t threes = g.rows % 3 == 1 && g.rows >= 4 ? g.rows / 3 - 1 : g.rows / 3;
  for (; r < 3 * threes; r += 3) row_group<3, kBlockScales, kFp32>(g, r);
  for (; g.rows - r >= 2; r += 2) row_group<2, kBlockScales, kFp32>(g, r);
  if (r < g.rows) row_group<1, kBlockScales, kFp32>(g, r);
}

// A rows [i0, i0 + MP) of `g` as a GEMV of their own.
template <int MP>
GemvArgs rows_of(const GemvArgs& g, int64_t i0) {
  const int64_t kb_count = (g.w->k + kBlockK - 1) / kBlockK;
  GemvArgs part = g;
  part.m = MP;
  part.a_bf16 = g.a_bf16 + i0 * g.lda_bf16;
  part.a_scale = g.a_scale ? g.a_scale + i0 * kb_count : nullptr;
  part.c = g.c + i0 * g.w->n;
  return part;
}

// 5 to 8 A rows of a BF16 weight (the lm_head at batch 5–8): per group of R W rows, a pass of A rows 0–3 and one
// of the rest; the second pass finds the group's W rows in L1, so W is streamed from memory once. Each output is
// computed by the same gemv_group sequence as at M ≤ 4, so the bits do not depend on M. (FP8 weights leave M > 4
// to the tile path: with their decode done once per pass, passes measured slower there — 64 V2-Lite experts at
// batch 8 and 16, the dense gate at M = 8 — while the head at M = 8 went from ~20 to ~15.5 ms.)
template <DType D, int MP, int R>
void second_pass(const GemvArgs& g, int64_t row, const Decoder& dec) {
  if constexpr (MP > 0) {
    if (g.m - 4 == MP) return gemv_group<D, MP, R, false>(rows_of<MP>(g, 4), row, dec, false);
    second_pass<D, MP - 1, R>(g, row, dec);
  }
}

template <DType D>
void gemv_passes(const GemvArgs& g) {
  constexpr int R = 4;  // 4·4 lane chains in registers
  const Decoder dec;
  const GemvArgs first = rows_of<4>(g, 0);
  int64_t j = 0;
  for (; g.rows - j >= R; j += R) {
    gemv_group<D, 4, R, false>(first, g.row0 + j, dec);
    second_pass<D, 4, R>(g, g.row0 + j, dec);
  }
  for (; j < g.rows; ++j) {
    gemv_group<D, 4, 1, false>(first, g.row0 + j, dec);
    second_pass<D, 4, 1>(g, g.row0 + j, dec);
  }
}

template <DType D>
void gemv_dispatch(const GemvArgs& g) {
  switch (g.m) {
    case 1: return gemv_m<D, 1>(g);
    case 2: return gemv_m<D, 2>(g);
    case 3: return gemv_m<D, 3>(g);
    case 4: return gemv_m<D, 4>(g);
    default:
      if constexpr (D == DType::BF16) return gemv_passes<D>(g);
  }
}

// BF16 weights are already what the dot product takes: the panel is a copy, zero past the valid columns.
void copy_block_bf16(const DecodeArgs& d) {
  for (int64_t r = 0; r < kPanelRows; ++r) {
    uint16_t* out = d.wbuf_half + r * d.ldw;
    int c = 0;
    if (r < d.next_rows)
      for (int64_t b = 0; b < d.next_bytes; b += 64)
        _mm_prefetch(reinterpret_cast<const char*>(d.next + r * d.k * 2 + b), _MM_HINT_T0);
    if (r < d.rows) {
      const uint16_t* src = static_cast<const uint16_t*>(d.data) + (d.row0 + r) * d.k + d.col0;
      for (; c < d.kn; c += 32) _mm512_store_si512(out + c, _mm512_maskz_loadu_epi16(first_n32(d.kn - c), src + c));
    }
    for (; c < d.ldw; c += 32) _mm512_store_si512(out + c, _mm512_setzero_si512());
  }
}

}  // namespace

void gemv_rows_bf16_dot(const GemvArgs& g) {
  if (g.w->dtype == DType::BF16)
    gemv_dispatch<DType::BF16>(g);
  else
    gemv_dispatch<DType::F8_E4M3>(g);
}

void block_update_bf16_dot(const BlockArgs& g) {
  if (g.block_scales)
    block_update<true, false>(g);
  else
    block_update<false, false>(g);
}

void block_update_bf16_dot_fp32(const BlockArgs& g) {
  if (g.block_scales)
    block_update<true, true>(g);
  else
    block_update<false, true>(g);
}

void decode_block_bf16_dot_fp32(const DecodeArgs& d) {
  const Decoder dec;
  const bool bf16 = d.dtype == DType::BF16;
  const int64_t elem = bf16 ? 2 : 1;
  for (int64_t r = 0; r < kPanelRows; ++r) {
    float* out = d.wbuf + r * d.ldw;
    int c = 0;
    if (r < d.next_rows)
      for (int64_t b = 0; b < d.next_bytes; b += 64)
        _mm_prefetch(reinterpret_cast<const char*>(d.next + r * d.k * elem + b), _MM_HINT_T0);
    if (r < d.rows) {
      const uint8_t* src = static_cast<const uint8_t*>(d.data) + ((d.row0 + r) * d.k + d.col0) * elem;
      for (; c < d.kn; c += 64) {
        __m512i v[2];
        if (bf16)
          DotRow<DType::BF16>::load(dec, src + c * 2, d.kn - c, v);
        else
          dec.decode(load_codes(src + c, d.kn - c), v);
        if (d.kn - c <= 32) v[1] = _mm512_setzero_si512();
        split_pairs(v[0], out + c);
        split_pairs(v[1], out + c + 32);
      }
    }
    for (; c < d.kn; c += 32) {
      _mm512_store_ps(out + c, _mm512_setzero_ps());
      _mm512_store_ps(out + c + 16, _mm512_setzero_ps());
    }
  }
}

void bf16_rows_to_split_fp32(const uint16_t* a, int64_t m, int64_t lda, float* out) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t c = 0; c < lda; c += 32) split_pairs(_mm512_loadu_si512(a + i * lda + c), out + i * lda + c);
}

namespace {
// 12 independent accumulator chains of `step`, so the loop is bound by the instruction's throughput, not its
// latency; `a` is hidden from the compiler each round so the steps cannot be folded.
template <typename Operand, typename Step>
void throughput_loop(int64_t iterations, Operand a, Step step, float* sink) {
  __m512 acc[12];
  for (auto& v : acc) v = _mm512_setzero_ps();
  for (int64_t it = 0; it < iterations; ++it) {
    for (auto& v : acc) v = step(v, a);
    asm("" : "+v"(a));
  }
  for (int i = 1; i < 12; ++i) acc[0] = _mm512_add_ps(acc[0], acc[i]);
  _mm512_storeu_ps(sink, acc[0]);
}
}  // namespace

void bf16_dot_throughput_loop(int64_t iterations, float* sink) {
  throughput_loop(iterations, _mm512_set1_epi16(0x3F80), [](__m512 v, __m512i a) { return dot(v, a, a); }, sink);
}

void fma_throughput_loop(int64_t iterations, float* sink) {
  throughput_loop(iterations, _mm512_set1_ps(1.0f), [](__m512 v, __m512 a) { return _mm512_fmadd_ps(a, a, v); },
                  sink);
}

static_assert(kChunkBlocks * kBlockK % 64 == 0, "BF16 panel rows are decoded 64 values at a time");
void decode_block_bf16_dot(const DecodeArgs& d) {
  if (d.dtype == DType::BF16) return copy_block_bf16(d);
  const Decoder dec;
  for (int64_t r = 0; r < kPanelRows; ++r) {
    uint16_t* out = d.wbuf_half + r * d.ldw;
    int c = 0;
    if (r < d.next_rows)
      for (int64_t b = 0; b < d.next_bytes; b += 64)
        _mm_prefetch(reinterpret_cast<const char*>(d.next + r * d.k + b), _MM_HINT_T0);
    if (r < d.rows) {
      const uint8_t* src = static_cast<const uint8_t*>(d.data) + (d.row0 + r) * d.k + d.col0;
      for (; c < d.kn; c += 64) {
        __m512i v[2];
        dec.decode(load_codes(src + c, d.kn - c), v);
        _mm512_store_si512(out + c, v[0]);
        _mm512_store_si512(out + c + 32, v[1]);
      }
    }
    for (; c < d.ldw; c += 32) _mm512_store_si512(out + c, _mm512_setzero_si512());
  }
}

void e4m3_rows_to_bf16(const uint8_t* q, int64_t m, int64_t k, uint16_t* out, int64_t lda) {
  const Decoder dec;
  for (int64_t i = 0; i < m; ++i) {
    const uint8_t* src = q + i * k;
    uint16_t* dst = out + i * lda;
    int64_t c = 0;
    for (; c < k; c += 64) {
      __m512i v[2];
      dec.decode(load_codes(src + c, int(k - c < 64 ? k - c : 64)), v);
      _mm512_storeu_si512(dst + c, v[0]);
      if (c + 32 < lda) _mm512_storeu_si512(dst + c + 32, v[1]);
    }
  }
}

void f32_rows_to_bf16(const float* a, int64_t m, int64_t k, uint16_t* out, int64_t lda) {
  const __m512 tiny = _mm512_set1_ps(0x1p-100f);
  for (int64_t i = 0; i < m; ++i) {
    const float* src = a + i * k;
    uint16_t* dst = out + i * lda;
    for (int64_t c = 0; c < lda; c += 16) {
      const int64_t left = k - c;
      const __mmask16 valid = left >= 16 ? __mmask16(0xFFFF) : left > 0 ? __mmask16((1u << left) - 1) : 0;
      __m512 x = _mm512_maskz_loadu_ps(valid, src + c);
      // |x| < 2^-100 → +0 (gemm.h): no product or partial of the dot product can then be an FP32 denormal.
      const __mmask16 keep = _mm512_cmp_ps_mask(_mm512_abs_ps(x), tiny, _CMP_NLT_UQ);
      x = _mm512_maskz_mov_ps(keep, x);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + c), (__m256i)_mm512_cvtneps_pbh(x));
    }
  }
}

}  // namespace deepmoe::gemm_detail
