// The BF16 dot-product orders of gemm.h in plain FP32 loops: what vdpbf16ps-based kernels compute, step by step,
// so that they can be checked bit for bit on any CPU (and this file checked against the FP64 gemm_ref within the
// W8A8 tolerance).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/gemm.h"
#include "kernels/quantize.h"

namespace deepmoe {
namespace {

constexpr int kLanes = 16;
constexpr int kBlock = 128;

float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// An e4m3 code's value; the NaN codes 0x7F/0xFF read as ±480 like in every GEMM path (gemm.h).
float e4m3_weight(uint8_t code) {
  if ((code & 0x7F) == 0x7F) return code & 0x80 ? -480.0f : 480.0f;
  return fp8_e4m3_to_f32(code);
}

// The gemm.h lane tree: (l, l+8), +4, +2, +1.
float lane_tree(const float* lane) {
  float t[8];
  for (int l = 0; l < 8; ++l) t[l] = lane[l] + lane[l + 8];
  for (int l = 0; l < 4; ++l) t[l] = t[l] + t[l + 4];
  for (int l = 0; l < 2; ++l) t[l] = t[l] + t[l + 2];
  return t[0] + t[1];
}

}  // namespace

uint16_t activation_to_bf16(float a) {
  uint32_t u;
  std::memcpy(&u, &a, sizeof u);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t((u >> 16) | 0x0040u);  // NaN stays NaN (quieted)
  if (std::fabs(a) < 0x1p-100f) return 0;
  return uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

void gemm_bf16_dot_ref(const float* a, int64_t m, const WeightMatrix& w, float* c, GemmMode mode) {
  const bool bf16 = w.dtype == DType::BF16;
  if (w.dtype != DType::F8_E4M3 && !bf16)
    throw Error("gemm_bf16_dot_ref: the weight must be F8_E4M3 or BF16, not " + std::string(dtype_name(w.dtype)));
  if (mode == GemmMode::W8A32) throw Error("gemm_bf16_dot_ref: mode must be W8A8 or W8A16");
  if (bf16 && mode != GemmMode::W8A16)
    throw Error("gemm_bf16_dot_ref: BF16 weights take the dot product in W8A16 only");
  const int64_t n = w.n, k = w.k, kb_count = quant_blocks(k);
  // A as the kernels multiply it: e4m3 values (W8A8) or BF16-rounded values (W8A16), both exact in FP32.
  std::vector<float> av(size_t(m * k)), a_scale(size_t(m * kb_count), 1.0f);
  if (mode == GemmMode::W8A8) {
    std::vector<uint8_t> q(size_t(m * k));
    quantize_act_1x128_ref(a, m, k, q.data(), a_scale.data(), false);
    for (int64_t i = 0; i < m * k; ++i) av[size_t(i)] = fp8_e4m3_to_f32(q[size_t(i)]);
  } else {
    for (int64_t i = 0; i < m * k; ++i) av[size_t(i)] = bits_to_float(uint32_t(activation_to_bf16(a[i])) << 16);
  }
  std::vector<float> wrow(static_cast<size_t>(k));
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t x = 0; x < k; ++x)
      wrow[size_t(x)] = bf16 ? bits_to_float(uint32_t(static_cast<const uint16_t*>(w.data)[j * k + x]) << 16)
                             : e4m3_weight(static_cast<const uint8_t*>(w.data)[j * k + x]);
    for (int64_t i = 0; i < m; ++i) {
      const float* ar = av.data() + i * k;
      // Lane l's chain over [begin, end) from p: one vdpbf16ps step per 32 k, the odd k's product first, then the
      // even k's; each product is exact, so fmaf rounds only the sum.
      const auto chain = [&](int l, int64_t begin, int64_t end, float p) {
        for (int64_t base = begin; base < end; base += 2 * kLanes) {
          const int64_t odd = base + 2 * l + 1, even = base + 2 * l;
          if (odd < end) p = std::fmaf(ar[odd], wrow[size_t(odd)], p);
          if (even < end) p = std::fmaf(ar[even], wrow[size_t(even)], p);
        }
        return p;
      };
      float acc[kLanes] = {};
      if (bf16) {  // one chain per lane over all of K, no promotion
        for (int l = 0; l < kLanes; ++l) acc[l] = chain(l, 0, k, 0.0f);
      } else {
        for (int64_t kb = 0; kb < kb_count; ++kb) {
          const int64_t end = std::min(k, (kb + 1) * kBlock);
          const float ws = w.scale_inv[(j / kBlock) * kb_count + kb];
          const float s = mode == GemmMode::W8A8 ? a_scale[size_t(i * kb_count + kb)] * ws : ws;
          for (int l = 0; l < kLanes; ++l) acc[l] = std::fmaf(chain(l, kb * kBlock, end, 0.0f), s, acc[l]);
        }
      }
      c[i * n + j] = lane_tree(acc);
    }
  }
}

}  // namespace deepmoe
