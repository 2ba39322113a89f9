// Block-scaled GEMM C[M,N] = A[M,K] · W[N,K]ᵀ with FP32 promotion per 128-wide K block — DeepGEMM's contract
// (DeepSeek-V3 report, §2, §5): for each K block kb the partial dot product p is computed on its own
// and then promoted into the FP32 accumulator, acc += p · scale(kb).
//
// Modes (F32 weights always multiply FP32 activations, and BF16 weights do in W8A32 and W8A8):
// - W8A32: A stays FP32, W is dequantized on the fly; scale = weight_scale_inv[n/128, kb] (model.py's default).
// - W8A8:  A is quantized 1x128 first (kernels/quantize.h, power-of-two scales off); scale = a_scale · w_scale.
// - W8A16: A is rounded to BF16 for F8_E4M3 and BF16 weights; scale = weight_scale_inv[n/128, kb] (BF16: 1).
//
// Batch invariance: C[i, j] is bitwise the same whatever M is, whichever row tile or code path
// computes it, whatever the thread count, and in grouped_gemm as in gemm. Every path follows one reduction order
// per output element: lane l of 16 owns the k ≡ l (mod 16). In each K block, lane l's partial is one fused-
// multiply-add chain over its k in increasing order, starting from zero; it is promoted into the lane's own FP32
// accumulator, acc_l = fma(p_l, scale(kb), acc_l), in increasing kb. After the last block the 16 accumulators are
// summed by the fixed tree ((l, l+8), then +4, +2, +1). So the FP32 promotion happens per block, as DeepGEMM's
// contract asks, while the only horizontal reduction happens once per output, not once per block. Scalar, AVX2
// and AVX-512 evaluate exactly that, so they agree bitwise (tested).
//
// BF16 dot-product order (F8_E4M3 weights in W8A8 and W8A16, BF16 weights in W8A16, on CPUs with AVX512_BF16
// and AVX512_VBMI; gemm_uses_bf16_dot()). FP8 e4m3 weights are exact in BF16, BF16 weights are BF16, and so are
// W8A8's e4m3 activations; W8A16 rounds activations to BF16 (nearest-even; |a| < 2^-100 becomes 0). Either way
// each product a·w has at most 16 significant bits, so it is exact in FP32, and vdpbf16ps — per FP32 lane j:
// acc = fma(a[2j+1], w[2j+1], acc), then acc = fma(a[2j], w[2j], acc) — adds exact products with one FP32
// rounding each, twice as many per instruction as an FP32 FMA.
// The order for F8_E4M3 weights: lane l of 16 owns the k with k mod 32 ∈ {2l, 2l+1}. In each K block, lane l's
// partial starts from zero and walks its k pairs in increasing order, adding the odd k's product and then the
// even k's, each with one rounding; the partial is promoted into the lane's accumulator, acc_l = fma(p_l, s,
// acc_l), in increasing kb, with s = a_scale(row, kb) · weight_scale_inv(n/128, kb) rounded to FP32 (W8A16: s =
// weight_scale_inv); the 16 accumulators are summed by the tree above. k past K contributes nothing.
// The order for BF16 weights (W8A16): the same lanes, pairs and tree, but one chain per lane over all of K —
// lane l's accumulator starts from zero and walks every one of its k pairs in increasing order (odd k, then even
// k), with no per-block partial and no promotion. Block scales are what the per-block promotion exists for;
// with a scale of 1 it would only add an FP32 rounding and an FMA per four dot-product steps per output (a fifth
// more work on the pipes the products run on) and a second register per accumulator, which the tile needs for
// its outputs (the lm_head at batch 32 is FMA-bound).
// The flush of tiny activations keeps every product and partial away from FP32 denormals, so the instruction's
// denormal handling (DAZ/FTZ) never shows, and gemm_bf16_dot_ref reproduces the kernels bit for bit on any CPU.
// Since the products are exact and each step is one FMA, FP32 FMAs on the same pairs give the same bits: where
// vdpbf16ps does fewer multiply-adds per second than the FP32 FMA (Sapphire/Emerald Rapids; Zen 4/5 do twice as
// many), the GEMM tiles evaluate this order on FP32 FMAs (gemm_kernels.h), measured once per process.
// Where the CPU lacks those features, W8A8 runs the FP32 order above on the e4m3 activations and W8A16 on the
// BF16-rounded activations (F8_E4M3 and BF16 weights alike, so the mode multiplies the same operands everywhere):
// other rounding order, so those two modes' bits depend on the CPU (W8A32's never do).
//
// K may be any size (the last block is partial) and N any size. F8_E4M3 codes 0x7F/0xFF (NaN) are not valid
// weights; the kernels read them as ±480.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace deepmoe {

class ThreadPool;

// W8A16: activations rounded to BF16 (no activation scale), weights exact — more accurate than W8A8 and as fast
// where the BF16 dot product runs.
enum class GemmMode { W8A8, W8A32, W8A16 };
const char* gemm_mode_name(GemmMode mode);

// W[N,K] in nn.Linear layout. F32 or BF16 (scale_inv null), or F8_E4M3 with scale_inv f32 [ceil(N/128), ceil(K/128)].
struct WeightMatrix {
  DType dtype = DType::F32;
  int64_t n = 0, k = 0;
  const void* data = nullptr;
  const float* scale_inv = nullptr;
};

// C[M,N] (row stride N) = A[M,K] (row stride K) · Wᵀ, FP32 in/out. Throws deepmoe::Error for an unsupported
// weight dtype or a missing buffer.
void gemm(const float* a, int64_t m, const WeightMatrix& w, float* c, GemmMode mode, ThreadPool* pool);
// The specification: plain loops, each block partial in FP64 over the exactly dequantized operands (W8A8: the
// e4m3 activations of FP8 products; W8A16: the BF16-rounded activations of FP8 and BF16 products), promoted in
// FP64 with the same scales, rounded to FP32 once at the end.
void gemm_ref(const float* a, int64_t m, const WeightMatrix& w, float* c, GemmMode mode);

// Whether gemm / grouped_gemm / gemm_fp8_act use the BF16 dot-product order for this mode and weight dtype on
// this CPU (F8_E4M3 weights in W8A8 or W8A16, BF16 weights in W8A16; AVX512_BF16 and AVX512_VBMI present,
// DEEPMOE_ISA not capped).
bool gemm_uses_bf16_dot(GemmMode mode, DType weight_dtype);
// The BF16 dot-product order in plain FP32 loops (F8_E4M3 weights in W8A8 or W8A16, BF16 weights in W8A16):
// bitwise what the kernels compute where gemm_uses_bf16_dot() holds, on any CPU.
void gemm_bf16_dot_ref(const float* a, int64_t m, const WeightMatrix& w, float* c, GemmMode mode);
// The activation rounding of W8A16: nearest-even BF16, |a| < 2^-100 → +0 (see the order above).
uint16_t activation_to_bf16(float a);

// Rows [row_offsets[g], row_offsets[g+1]) of A and C use weights[g]; groups may be empty; row_offsets[0] is the
// first row. All weights share n and k (C's row stride is n): DeepGEMM's m-grouped contiguous layout, so a
// prefill runs every expert of a layer in one call.
void grouped_gemm(const float* a, const int64_t* row_offsets, int64_t n_groups, const WeightMatrix* weights,
                  float* c, GemmMode mode, ThreadPool* pool);
void grouped_gemm_ref(const float* a, const int64_t* row_offsets, int64_t n_groups, const WeightMatrix* weights,
                      float* c, GemmMode mode);

// W8A8 with activations already quantized 1x128 (e.g. received FP8 from dispatch, DESIGN.md §4): a_q [M,K] e4m3,
// a_scales [M, ceil(K/128)]. Same result as gemm(..., W8A8) on the activations these came from.
void gemm_fp8_act(const uint8_t* a_q, const float* a_scales, int64_t m, const WeightMatrix& w, float* c,
                  ThreadPool* pool);

// Totals over every gemm / grouped_gemm / gemm_fp8_act call of this process so far (all threads): the wall time
// each call took on its calling thread (including activation quantization and packing) and the multiply-add FLOPs
// it performed (2·M·N·K). Benchmarks take differences around a region to see the GEMM share of its time.
struct GemmCounters {
  uint64_t calls = 0;
  double flops = 0;
  double seconds = 0;
};
GemmCounters gemm_counters();

}  // namespace deepmoe
