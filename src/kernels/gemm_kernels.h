// Internal to the GEMM: the per-ISA inner kernels that gemm.cpp's driver calls. Not for other layers.
//
// Two paths evaluate the one reduction order of gemm.h:
// - GEMV (M ≤ kGemvMaxRows): gemv_rows streams a few W rows at a time over the whole of K, decoding FP8 (or BF16)
//   straight into registers; each W row is touched once, front to back, and the per-lane partials and promoted
//   accumulators never leave registers. Decode-shaped calls are bandwidth-bound, so this is what matters there.
// - GEMM: tasks of (up to 64 A rows) × (4 16-row W panels), driven by gemm.cpp. Per chunk of kChunkBlocks K
//   blocks and per panel, the ISA's decoder writes the panel into `wbuf` as FP32 rows — F8_E4M3 codes as q·2^-8
//   (the e4m3→fp16 bit trick; the 2^8 is folded into the block scale), BF16/F32 exactly — zero-padded past N and
//   past the valid columns (on AVX-512 FP8 panels stay FP16 and BF16 panels BF16, `wbuf_half`, widened as the
//   tile loads them).
//   Then block_update runs MR A rows × 4 W rows register tiles, each over all blocks of the chunk in turn,
//   promoting each output's 16 lane partials into its lane accumulators (16 floats per output, `lacc`) after every
//   block: AVX-512 holds a tile's accumulators in registers for the whole chunk, AVX2 and the scalar path update
//   `lacc` in L1. After the last chunk the driver sums each output's lanes by the tree of gemm.h (reduce_lanes);
//   on AVX-512 the tiles of the last chunk do it themselves (BlockArgs::c).
#pragma once

#include <cstdint>

#include "core/cpu_features.h"
#include "core/dtype.h"
#include "kernels/gemm.h"

namespace deepmoe::gemm_detail {

constexpr int kPanelRows = 16;
constexpr int kBlockK = 128;
constexpr int kLanes = 16;
// Up to this many A rows, a call decodes W in registers (gemv_rows) rather than through the panel buffer: with so
// few rows per weight the buffer's store and reload cost more than the FMAs they feed, and decode at batch 1 is
// bandwidth-bound, which the GEMV's streaming serves best. From 5 rows on the GEMM path is faster (v3 expert
// shape, 64 experts × 5..16 rows: 134–213 vs 107–112 GFLOP/s through gemv_rows) — except on AVX-512's FP32
// order, whose gemv_rows runs 5 to kGemvMaxRowsAvx512 rows in passes that serve 4 A rows per decoded W vector
// and 4 W rows per loaded A vector (batched decode: BF16 lm_head at M = 8 0.36 → 0.49 of the FMA peak, a layer of
// 64 V2-Lite experts at batch 32 ~10% faster; at M = 16 and 32 the GEMM path keeps up on FP8 weights). The BF16
// dot product's gemv_rows runs such passes for BF16 weights only (gemm_bf16_dot_avx512bf16.cpp).
constexpr int64_t kGemvMaxRows = 4;
constexpr int64_t kGemvMaxRowsAvx512 = 8;

// How far ahead of its reads a gemv group prefetches W, per row stream (tuned on the GEMV benchmark shapes).
constexpr int kGemvPrefetchBytes = 1536;

// C[i, row0 + j] for i < m and j < rows (m ≤ the ISA's GEMV row limit; more rows run as passes over W).
struct GemvArgs {
  const float* a = nullptr;        // [m, w.k]
  int64_t m = 0;
  const float* a_scale = nullptr;  // [m, ceil(k/128)] for W8A8, else null (all 1)
  const WeightMatrix* w = nullptr;
  int64_t row0 = 0, rows = 0;
  float* c = nullptr;              // row i at c + i · w.n
  // The BF16 dot-product path (gemm.h) reads A as BF16 instead: row i at a_bf16 + i · lda_bf16, zero from k to
  // the row's next multiple of 32.
  const uint16_t* a_bf16 = nullptr;
  int64_t lda_bf16 = 0;
};

constexpr int kChunkBlocks = 4;  // K blocks per decoded chunk: 16 × 512 floats = 32 KB of panel

struct BlockArgs {
  const float* a = nullptr;        // A at row 0 of the range, column (first block)·128
  int64_t lda = 0;                 // A row stride
  int64_t rows = 0;
  int n_blocks = 0;                // K blocks in this chunk, 1..kChunkBlocks
  int kn_last = 0;                 // valid columns of the chunk's last block, 1..128 (the others are full)
  const float* wbuf = nullptr;     // 16 rows × ldw decoded weights, zero past the valid columns
  const uint16_t* wbuf_half = nullptr;  // instead of wbuf: the same panel in 16 bits (see DecodeArgs)
  bool half_is_bf16 = false;            // wbuf_half holds BF16 (else FP16) bit patterns
  int64_t ldw = 0;
  const float* a_scale = nullptr;  // scale of row r, chunk block b at a_scale[r · a_scale_stride + b], or null (1)
  int64_t a_scale_stride = 0;
  const float* w_scale = nullptr;  // per chunk block; the promotion scale of (row, block) is a_scale · w_scale
  float* lacc = nullptr;           // [rows][16][16] lane accumulators
  bool first_chunk = false;        // lacc is not read but started from zero (saves clearing it)
  // Last chunk, for ISAs with Isa::fused_lane_sums: instead of storing the lane accumulators, the tile sums each
  // output's lanes (gemm.h's tree) and writes C[r, j] = c[r · ldc + j] for panel rows j < c_cols. Saves the lacc
  // round trip and the separate reduce pass, which dominate short-K products (MLA's per-head W_UK, K = 128).
  float* c = nullptr;
  int64_t ldc = 0;
  int c_cols = 0;
  // The BF16 dot-product path: A as BF16 (row stride lda, zero past K up to a multiple of 32) against a panel of
  // exact BF16 weight values in wbuf_half; always writes C through `c` on the last chunk. block_scales: each
  // block's partial is promoted by its scale (F8_E4M3 weights); false: the lane chains run on through the blocks
  // (BF16 weights, gemm.h) and w_scale is not read.
  const uint16_t* a_bf16 = nullptr;
  bool block_scales = true;
};

struct DecodeArgs {
  DType dtype = DType::F32;
  const void* data = nullptr;  // W [n, k]
  int64_t k = 0;
  int64_t row0 = 0, rows = 0;  // W rows [row0, row0 + rows) → wbuf rows [0, rows), rows ≤ 16; the rest zero
  int64_t col0 = 0;
  int kn = 0;                  // valid columns from col0; wbuf columns [kn, ldw) are zeroed
  int64_t ldw = 0;
  float* wbuf = nullptr;
  // Instead of wbuf, for F8_E4M3 and BF16 on AVX-512 (Isa::half_panel): the panel in 16 bits, exact like the
  // FP32 form — FP16 bit patterns of q·2^-8 for F8_E4M3, the BF16 values as they are. Half the bytes: the decoder
  // stores half as much and skips the FP32 conversion, and the tile's loads (widened on the way, on pipes the FMAs
  // do not use) keep a 3-row A slice and the panel in L1.
  uint16_t* wbuf_half = nullptr;
  // The panel the task decodes next, prefetched one row per row decoded here (null: none). Spread out like this
  // the prefetches land; issued as one burst of 16 rows × 8 lines most of them were dropped, and the next decode
  // waited on memory.
  const uint8_t* next = nullptr;  // its first row at its first column
  int64_t next_rows = 0;          // rows (≤ 16), row stride k · element size
  int64_t next_bytes = 0;         // bytes per row
};

// The BF16 dot-product path (gemm.h), built for AVX-512 with AVX512_BF16 and AVX512_VBMI
// (gemm_bf16_dot_avx512bf16.cpp); entered only where cpu_features() has both. The panel decoder writes F8_E4M3
// rows as exact BF16 values (not the q·2^-8 of the FP16 form): the promotion scale is weight_scale_inv itself.
// BF16 weights (W8A16) are copied as they are, and gemv_rows takes them from W directly.
void gemv_rows_bf16_dot(const GemvArgs& args);
void block_update_bf16_dot(const BlockArgs& args);
void decode_block_bf16_dot(const DecodeArgs& args);
// A rows for the dot path: [m, k] → [m, lda] BF16, lda a multiple of 32 ≥ k, zero past k. From e4m3 codes
// (exact) or from FP32 by the W8A16 rounding (gemm.h activation_to_bf16).
void e4m3_rows_to_bf16(const uint8_t* q, int64_t m, int64_t k, uint16_t* out, int64_t lda);
void f32_rows_to_bf16(const float* a, int64_t m, int64_t k, uint16_t* out, int64_t lda);

// The same order on FP32 FMAs, for CPUs whose vdpbf16ps does fewer multiply-adds per second than the FP32 FMA
// (same bits): the panel (DecodeArgs::wbuf, ldw floats a row) and A (BlockArgs::a) hold FP32 values in the split
// form — per group of 32 k, the 16 odd k then the 16 even k — and block_update_bf16_dot_fp32 runs FP32 FMA tiles
// over them. The GEMV keeps vdpbf16ps (it is bound by memory, and reads half the bytes of A).
void block_update_bf16_dot_fp32(const BlockArgs& args);
void decode_block_bf16_dot_fp32(const DecodeArgs& args);
// BF16 rows [m, lda] (lda a multiple of 32) → the split form, FP32 [m, lda].
void bf16_rows_to_split_fp32(const uint16_t* a, int64_t m, int64_t lda, float* out);
// Throughput probes: `iterations` × 12 independent vdpbf16ps (or FP32 FMAs) on zmm registers.
void bf16_dot_throughput_loop(int64_t iterations, float* sink);
void fma_throughput_loop(int64_t iterations, float* sink);
// Which tiles the dot path's GEMM runs: Auto measures once which instruction does more multiply-adds per second
// here; tests force either to check both against the twin (their bits are the same).
enum class DotTiles { Auto, Bf16Dot, Fma };
void set_dot_tiles(DotTiles tiles);

// out[j] = the final lane tree of gemm.h over lanes[16·j, 16·j + 16), j < n ≤ 16.
void reduce_lanes_scalar(const float* lanes, int n, float* out);
void reduce_lanes_avx2(const float* lanes, int n, float* out);
void reduce_lanes_avx512(const float* lanes, int n, float* out);

void gemv_rows_scalar(const GemvArgs& args);
void block_update_scalar(const BlockArgs& args);
void decode_block_scalar(const DecodeArgs& args);
void gemv_rows_avx2(const GemvArgs& args);
void block_update_avx2(const BlockArgs& args);
void decode_block_avx2(const DecodeArgs& args);
void gemv_rows_avx512(const GemvArgs& args);
void block_update_avx512(const BlockArgs& args);
void decode_block_avx512(const DecodeArgs& args);

// Helpers for the baseline files (driver, scalar kernels) only: an inline function used from an *_avx*.cpp file
// could be kept by the linker in its AVX-compiled copy for every caller.

// The final tree of gemm.h over one output's 16 lane accumulators.
inline float sum_lanes(const float* lane) {
  float t[8];
  for (int l = 0; l < 8; ++l) t[l] = lane[l] + lane[l + 8];
  for (int l = 0; l < 4; ++l) t[l] = t[l] + t[l + 4];
  for (int l = 0; l < 2; ++l) t[l] = t[l] + t[l + 2];
  return t[0] + t[1];
}

// The promotion scale of W block (row / 128, kb): the decoders return e4m3 codes as q·2^-8, so 2^8 comes back
// here, exactly (a power of two). 1 for BF16 and F32 weights.
inline float weight_block_scale(const WeightMatrix& w, int64_t row, int64_t kb, int64_t kb_count) {
  return w.dtype == DType::F8_E4M3 ? w.scale_inv[(row / kBlockK) * kb_count + kb] * 256.0f : 1.0f;
}

// gemm / grouped_gemm on the paths of one ISA level (capped at what the CPU has), so tests can compare the levels
// in one process. gemm() and grouped_gemm() use cpu_features().level.
void gemm_at_level(IsaLevel level, const float* a, int64_t m, const WeightMatrix& w, float* c, GemmMode mode,
                   ThreadPool* pool);
void grouped_gemm_at_level(IsaLevel level, const float* a, const int64_t* row_offsets, int64_t n_groups,
                           const WeightMatrix* weights, float* c, GemmMode mode, ThreadPool* pool);
IsaLevel hardware_isa_level();
// Whether gemm_at_level(level, ...) takes the BF16 dot-product order for this mode and weight dtype.
bool bf16_dot_at_level(IsaLevel level, GemmMode mode, DType weight_dtype);

}  // namespace deepmoe::gemm_detail
