// Fine-grained FP8 (E4M3) quantization as DeepSeek-V3 does it (reference/deepseek_v3_system.md §2; paper §3.3).
//
// Activations: per token, per 128-channel tile ("1x128"): amax = max(max|x|, 1e-4), s = amax / 448 — or with
// `ue8m0` the power of two 2^ceil(log2 s) that DeepSeek uses for dispatch — and q = e4m3(x / s) (kernel.py
// act_quant divides, it does not multiply by a reciprocal). The transposed "128x1" tiling (per channel, per 128
// tokens) is what the backward pass needs for Wᵀ·dY-style products.
// Weights: per 128x128 block, s = max(amax, 1e-4) / 448, q = e4m3(w / s); `scale_inv` [ceil(N/128), ceil(K/128)]
// holds s as a MULTIPLIER (dequant = q · s), the layout of the official `weight_scale_inv` tensors. Edge blocks are
// zero-padded: padding never changes amax, and it is not stored.
//
// Tiles at the end of a row (k % 128 != 0) or column cover the remaining elements only. Inputs are assumed
// NaN-free; ±inf saturates to ±448 (core/dtype.h). Every function has a plain-loop `_ref` twin that is its
// specification; the fast versions give bit-identical results.
#pragma once

#include <cstdint>

namespace deepmoe {

class ThreadPool;

constexpr int64_t kQuantBlock = 128;
constexpr float kQuantAmaxFloor = 1e-4f;

inline int64_t quant_blocks(int64_t n) { return (n + kQuantBlock - 1) / kQuantBlock; }

// The scale for a tile with this amax: max(amax, 1e-4)/448, rounded up to a power of two when ue8m0.
float fp8_tile_scale(float amax, bool ue8m0);

// x [m, k] row-major → q [m, k] e4m3, scales [m, ceil(k/128)].
void quantize_act_1x128(const float* x, int64_t m, int64_t k, uint8_t* q, float* scales, bool ue8m0,
                        ThreadPool* pool = nullptr);
void quantize_act_1x128_ref(const float* x, int64_t m, int64_t k, uint8_t* q, float* scales, bool ue8m0);

// x [m, k] row-major → q [m, k] e4m3 (same layout), scales [ceil(m/128), k]: one scale per channel per 128 rows.
void quantize_act_128x1(const float* x, int64_t m, int64_t k, uint8_t* q, float* scales, bool ue8m0,
                        ThreadPool* pool = nullptr);
void quantize_act_128x1_ref(const float* x, int64_t m, int64_t k, uint8_t* q, float* scales, bool ue8m0);

// Re-tiling of an already quantized activation (dequantize exactly, then quantize in the other tiling), as the
// backward pass does with the forward's 1x128 activations. Output q/scales as in the functions above.
void requantize_1x128_to_128x1(const uint8_t* q, const float* scales, int64_t m, int64_t k, uint8_t* q_out,
                               float* scales_out, bool ue8m0);
void requantize_128x1_to_1x128(const uint8_t* q, const float* scales, int64_t m, int64_t k, uint8_t* q_out,
                               float* scales_out, bool ue8m0);

// Exact dequantization (q · s) to f32.
void dequantize_act_1x128(const uint8_t* q, const float* scales, int64_t m, int64_t k, float* out);
void dequantize_act_128x1(const uint8_t* q, const float* scales, int64_t m, int64_t k, float* out);

// w [n, k] row-major (nn.Linear layout) → q [n, k] e4m3, scale_inv [ceil(n/128), ceil(k/128)].
void quantize_weight_128x128(const float* w, int64_t n, int64_t k, uint8_t* q, float* scale_inv,
                             ThreadPool* pool = nullptr);
void quantize_weight_128x128_ref(const float* w, int64_t n, int64_t k, uint8_t* q, float* scale_inv);
void dequantize_weight_128x128(const uint8_t* q, const float* scale_inv, int64_t n, int64_t k, float* out);

// True when any byte is an e4m3 NaN code (0x7F / 0xFF). Valid checkpoints never hold one; the GEMM kernels
// read such a code as ±480 rather than NaN, so loaders that care should check with this.
bool fp8_e4m3_has_nan(const uint8_t* q, int64_t n);

}  // namespace deepmoe
