// Portable inner kernels: the reduction order of gemm.h evaluated with plain C++. std::fma rounds once, exactly
// like the vector FMA instructions, so this path agrees bitwise with AVX2 and AVX-512 (glibc selects a hardware
// fma at run time where the CPU has one).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "kernels/gemm_kernels.h"
#include "kernels/quantize.h"

namespace deepmoe::gemm_detail {
namespace {

// e4m3 code → q·2^-8, by the same fp16 bit move as the vector decoders, so codes 0x7F/0xFF read as ±480 on
// every path (gemm.h).
const std::array<float, 256>& fp8_lut() {
  static const std::array<float, 256> lut = [] {
    std::array<float, 256> t{};
    for (int b = 0; b < 256; ++b) t[size_t(b)] = f16_to_f32(uint16_t(((b & 0x80) << 8) | ((b & 0x7F) << 7)));
    return t;
  }();
  return lut;
}

// Lane partials of one K block: lane l chains the k ≡ l (mod 16), k < kn, in increasing k.
void block_partials(const float* a, const float* w, int kn, float* p) {
  for (int l = 0; l < kLanes; ++l) p[l] = 0.0f;
  for (int k = 0; k < kn; ++k) p[k % kLanes] = std::fma(a[k], w[k], p[k % kLanes]);
}

}  // namespace

void reduce_lanes_scalar(const float* lanes, int n, float* out) {
  for (int j = 0; j < n; ++j) out[j] = sum_lanes(lanes + j * kLanes);
}

void gemv_rows_scalar(const GemvArgs& g) {
  const WeightMatrix& w = *g.w;
  const int64_t kb_count = quant_blocks(w.k);
  const auto& lut = fp8_lut();
  float wrow[kBlockK], p[kLanes];
  for (int64_t j = 0; j < g.rows; ++j) {
    const int64_t row = g.row0 + j;
    for (int64_t i = 0; i < g.m; ++i) {
      float acc[kLanes] = {};
      for (int64_t kb = 0; kb < kb_count; ++kb) {
        const int kn = int(std::min<int64_t>(kBlockK, w.k - kb * kBlockK));
        const int64_t off = row * w.k + kb * kBlockK;
        for (int c = 0; c < kn; ++c)
          wrow[c] = w.dtype == DType::F8_E4M3 ? lut[static_cast<const uint8_t*>(w.data)[off + c]]
                    : w.dtype == DType::BF16 ? bf16_to_f32(static_cast<const uint16_t*>(w.data)[off + c])
                                             : static_cast<const float*>(w.data)[off + c];
        block_partials(g.a + i * w.k + kb * kBlockK, wrow, kn, p);
        const float ws = weight_block_scale(w, row, kb, kb_count);
        const float s = g.a_scale ? g.a_scale[i * kb_count + kb] * ws : ws;
        for (int l = 0; l < kLanes; ++l) acc[l] = std::fma(p[l], s, acc[l]);
      }
      g.c[i * w.n + row] = sum_lanes(acc);
    }
  }
}

void block_update_scalar(const BlockArgs& g) {
  float p[kLanes];
  for (int64_t r = 0; r < g.rows; ++r)
    for (int j = 0; j < kPanelRows; ++j) {
      float* acc = g.lacc + (r * kPanelRows + j) * kLanes;
      if (g.first_chunk) std::fill(acc, acc + kLanes, 0.0f);
      for (int b = 0; b < g.n_blocks; ++b) {
        const int kn = b == g.n_blocks - 1 ? g.kn_last : kBlockK;
        block_partials(g.a + r * g.lda + b * kBlockK, g.wbuf + j * g.ldw + b * kBlockK, kn, p);
        const float ws = g.w_scale[b];
        const float s = g.a_scale ? g.a_scale[r * g.a_scale_stride + b] * ws : ws;
        for (int l = 0; l < kLanes; ++l) acc[l] = std::fma(p[l], s, acc[l]);
      }
    }
}

void decode_block_scalar(const DecodeArgs& d) {
  const auto& lut = fp8_lut();
  std::fill(d.wbuf, d.wbuf + kPanelRows * d.ldw, 0.0f);
  for (int64_t r = 0; r < d.rows; ++r) {
    float* out = d.wbuf + r * d.ldw;
    const int64_t off = (d.row0 + r) * d.k + d.col0;
    switch (d.dtype) {
      case DType::F8_E4M3: {
        const uint8_t* in = static_cast<const uint8_t*>(d.data) + off;
        for (int c = 0; c < d.kn; ++c) out[c] = lut[in[c]];
        break;
      }
      case DType::BF16: {
        const uint16_t* in = static_cast<const uint16_t*>(d.data) + off;
        for (int c = 0; c < d.kn; ++c) out[c] = bf16_to_f32(in[c]);
        break;
      }
      default: std::memcpy(out, static_cast<const float*>(d.data) + off, size_t(d.kn) * sizeof(float));
    }
  }
}

}  // namespace deepmoe::gemm_detail
