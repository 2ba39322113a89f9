// Portable inner kernels: the reduction order of gemm.h evaluated with plain C++ (separate multiply and add, as
// the baseline x86-64 target has no FMA; -ffp-contract=off keeps the compiler from fusing them elsewhere).
#include <algorithm>
#include <array>
#include <cstring>

#include "kernels/gemm_kernels.h"

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

// One output: 16 lanes over the block, then the fixed tree of gemm.h.
float block_dot(const float* a, const float* w, int kn) {
  float lane[16] = {};
  const int steps = (kn + 15) / 16;
  for (int s = 0; s < steps; ++s)
    for (int l = 0; l < 16; ++l) {
      const int k = 16 * s + l;
      const float av = k < kn ? a[k] : 0.0f;
      lane[l] = lane[l] + av * w[k];
    }
  for (int l = 0; l < 8; ++l) lane[l] = lane[l] + lane[l + 8];
  for (int l = 0; l < 4; ++l) lane[l] = lane[l] + lane[l + 4];
  for (int l = 0; l < 2; ++l) lane[l] = lane[l] + lane[l + 2];
  return lane[0] + lane[1];
}

}  // namespace

void kb_update_scalar(const KbArgs& g) {
  for (int p = 0; p < g.n_panels; ++p) {
    const float* wp = g.wbuf + int64_t(p) * kPanelRows * kBlockK;
    float* cp = g.cacc + int64_t(p) * g.rows * 16;
    for (int64_t r = 0; r < g.rows;) {
      const int mr = g.rows - r >= 4 ? 4 : g.rows - r >= 2 ? 2 : 1;
      const int nr = 16 / mr;
      for (int i = 0; i < mr; ++i) {
        const float s = g.a_scale ? g.a_scale[(r + i) * g.a_scale_stride] * g.w_scale[p] : g.w_scale[p];
        for (int j = 0; j < 16; ++j) {
          float& acc = cp[16 * r + 16 * (j / nr) + nr * i + j % nr];
          acc = acc + block_dot(g.a + (r + i) * g.lda, wp + j * kBlockK, g.kn) * s;
        }
      }
      r += mr;
    }
  }
}

void decode_block_scalar(const DecodeArgs& d) {
  const auto& lut = fp8_lut();
  std::fill(d.wbuf, d.wbuf + int64_t(d.n_panels) * kPanelRows * kBlockK, 0.0f);
  for (int64_t r = 0; r < d.rows; ++r) {
    float* out = d.wbuf + r * kBlockK;
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
