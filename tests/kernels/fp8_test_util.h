// Random inputs and FP8 weight fixtures shared by the kernel tests.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "kernels/gemm.h"
#include "kernels/quantize.h"

namespace deepmoe::test {

inline std::vector<float> random_normal(size_t n, uint64_t seed, float stddev = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// Rows/columns of 128-tiles scaled to huge, tiny and zero magnitudes, to exercise the scale paths.
inline void make_adversarial_tiles(std::vector<float>& x, int64_t rows, int64_t cols) {
  const float factors[] = {1e15f, 1e-15f, 0.0f, 1.0f, 3e-5f};  // products stay finite
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) x[size_t(r * cols + c)] *= factors[(r + c / 128) % 5];
}

// A weight in one of the supported storage dtypes, built from f32 values.
struct OwnedWeight {
  std::vector<uint8_t> fp8;
  std::vector<uint16_t> bf16;
  std::vector<float> f32, scale_inv;
  WeightMatrix view;
};

inline OwnedWeight make_weight(DType dtype, const std::vector<float>& w, int64_t n, int64_t k) {
  OwnedWeight o;
  o.view.dtype = dtype;
  o.view.n = n;
  o.view.k = k;
  if (dtype == DType::F8_E4M3) {
    o.fp8.resize(size_t(n * k));
    o.scale_inv.resize(size_t(quant_blocks(n) * quant_blocks(k)));
    quantize_weight_128x128_ref(w.data(), n, k, o.fp8.data(), o.scale_inv.data());
    o.view.data = o.fp8.data();
    o.view.scale_inv = o.scale_inv.data();
  } else if (dtype == DType::BF16) {
    o.bf16.resize(size_t(n * k));
    for (size_t i = 0; i < o.bf16.size(); ++i) o.bf16[i] = f32_to_bf16(w[i]);
    o.view.data = o.bf16.data();
  } else {
    o.f32 = w;
    o.view.data = o.f32.data();
  }
  return o;
}

// The same weight with every value replaced by its magnitude (sign bits cleared), for error bounds.
inline OwnedWeight abs_weight(const OwnedWeight& w) {
  OwnedWeight o = w;
  for (auto& b : o.fp8) b &= 0x7F;
  for (auto& h : o.bf16) h &= 0x7FFF;
  for (auto& f : o.f32) f = std::fabs(f);
  o.view.data = o.fp8.size() ? static_cast<const void*>(o.fp8.data())
                : o.bf16.size() ? static_cast<const void*>(o.bf16.data())
                                : static_cast<const void*>(o.f32.data());
  if (o.scale_inv.size()) o.view.scale_inv = o.scale_inv.data();
  return o;
}

// DeepGEMM's calc_diff (tests/test_core.py): 1 − 2Σxy / Σ(x² + y²), in FP64.
inline double calc_diff(const std::vector<float>& x, const std::vector<double>& y) {
  double xy = 0, sq = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    xy += double(x[i]) * y[i];
    sq += double(x[i]) * x[i] + y[i] * y[i];
  }
  return 1.0 - 2.0 * xy / sq;
}

}  // namespace deepmoe::test
