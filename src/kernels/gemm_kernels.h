// Internal to the GEMM: the per-ISA inner kernels that gemm.cpp's driver calls. Not for other layers.
//
// The driver splits W into panels of 16 rows. For one K block (128 wide, or the partial last block) it decodes a
// group of panels into `wbuf` as FP32 — F8_E4M3 codes as q·2^-8 (the e4m3→fp16 bit trick; the 2^8 is folded
// into the block scale), BF16/F32 exactly — zero-padded past N and past the block's valid `kn` columns. Then
// kb_update multiplies the rows of A with every panel and promotes each 16-lane block partial into `cacc`.
//
// cacc layout, shared by every ISA so the driver can scatter it into C: per panel, `rows` × 16 floats. Rows are
// taken in groups of MR = 4 while at least 4 remain, then 2, then 1 (the same rule everywhere). A group starting
// at row r occupies floats [16·r, 16·(r + MR)) and is split into 16-float subtiles of MR rows × NR = 16/MR
// columns: element (i, j) of the group sits at 16·(j / NR) + NR·i + j % NR.
#pragma once

#include <cstdint>

#include "core/cpu_features.h"
#include "core/dtype.h"
#include "kernels/gemm.h"

namespace deepmoe::gemm_detail {

constexpr int kPanelRows = 16;
constexpr int kBlockK = 128;

struct KbArgs {
  const float* a = nullptr;        // A at row 0 of the range, column kb·128
  int64_t lda = 0;                 // A row stride
  int64_t rows = 0;
  int kn = 0;                      // valid columns in this block, 1..128
  const float* wbuf = nullptr;     // n_panels × 16 × 128 decoded weights
  int n_panels = 0;
  const float* a_scale = nullptr;  // scale of row r at a_scale[r · a_scale_stride], or null (all 1)
  int64_t a_scale_stride = 0;
  const float* w_scale = nullptr;  // per panel; a row's promotion scale is a_scale · w_scale
  float* cacc = nullptr;           // n_panels × rows × 16
};

struct DecodeArgs {
  DType dtype = DType::F32;
  const void* data = nullptr;  // W [n, k]
  int64_t k = 0;
  int64_t row0 = 0, rows = 0;  // W rows [row0, row0 + rows) → wbuf rows [0, rows); rows up to n_panels·16 zero
  int64_t col0 = 0;
  int kn = 0;
  int n_panels = 0;
  float* wbuf = nullptr;
};

void kb_update_scalar(const KbArgs& args);
void decode_block_scalar(const DecodeArgs& args);
void kb_update_avx2(const KbArgs& args);
void decode_block_avx2(const DecodeArgs& args);
void kb_update_avx512(const KbArgs& args);
void decode_block_avx512(const DecodeArgs& args);

// gemm / grouped_gemm on the paths of one ISA level (capped at what the CPU has), so tests can compare the levels
// in one process. gemm() and grouped_gemm() use cpu_features().level.
void gemm_at_level(IsaLevel level, const float* a, int64_t m, const WeightMatrix& w, float* c, GemmMode mode,
                   ThreadPool* pool);
void grouped_gemm_at_level(IsaLevel level, const float* a, const int64_t* row_offsets, int64_t n_groups,
                           const WeightMatrix* weights, float* c, GemmMode mode, ThreadPool* pool);
IsaLevel hardware_isa_level();

}  // namespace deepmoe::gemm_detail
