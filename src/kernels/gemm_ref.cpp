// The specification of gemm.h in plain loops: exactly dequantized operands, each 128-wide K block's partial
// product and its promotion by the block scale(s) (DeepGEMM's contract, reference §5) in FP64, one rounding to
// FP32 at the end. The fast paths differ from it only by FP32 rounding.
#include <algorithm>
#include <vector>

#include "core/error.h"
#include "kernels/gemm.h"
#include "kernels/quantize.h"

namespace deepmoe {

void gemm_ref(const float* a, int64_t m, const WeightMatrix& w, float* c, GemmMode mode) {
  if (w.dtype != DType::F32 && w.dtype != DType::BF16 && w.dtype != DType::F8_E4M3)
    throw Error("gemm_ref: unsupported weight dtype " + std::string(dtype_name(w.dtype)));
  const int64_t n = w.n, k = w.k, kb_count = quant_blocks(k);
  const bool fp8 = w.dtype == DType::F8_E4M3, w8a8 = fp8 && mode == GemmMode::W8A8;
  // A as the kernel multiplies it: FP32, its e4m3 codes decoded exactly with per-tile scales, or BF16-rounded.
  std::vector<float> av(size_t(m * k)), a_scale(size_t(m * kb_count), 1.0f);
  if (w8a8) {
    std::vector<uint8_t> q(size_t(m * k));
    quantize_act_1x128_ref(a, m, k, q.data(), a_scale.data(), false);
    for (int64_t i = 0; i < m * k; ++i) av[size_t(i)] = fp8_e4m3_to_f32(q[size_t(i)]);
  } else if (mode == GemmMode::W8A16 && (fp8 || w.dtype == DType::BF16)) {
    for (int64_t i = 0; i < m * k; ++i) av[size_t(i)] = bf16_to_f32(activation_to_bf16(a[i]));
  } else {
    std::copy(a, a + m * k, av.begin());
  }
  std::vector<double> wrow(static_cast<size_t>(k));
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t c0 = 0; c0 < k; ++c0) {
      const int64_t idx = j * k + c0;
      switch (w.dtype) {
        case DType::F8_E4M3: wrow[size_t(c0)] = fp8_e4m3_to_f32(static_cast<const uint8_t*>(w.data)[idx]); break;
        case DType::BF16: wrow[size_t(c0)] = bf16_to_f32(static_cast<const uint16_t*>(w.data)[idx]); break;
        default: wrow[size_t(c0)] = static_cast<const float*>(w.data)[idx];
      }
    }
    for (int64_t i = 0; i < m; ++i) {
      double acc = 0;
      for (int64_t kb = 0; kb < kb_count; ++kb) {
        double partial = 0;
        for (int64_t c0 = kb * 128; c0 < std::min(k, kb * 128 + 128); ++c0)
          partial += double(av[size_t(i * k + c0)]) * wrow[size_t(c0)];
        double scale = 1.0;
        if (fp8) scale = double(w.scale_inv[(j / 128) * kb_count + kb]);
        if (w8a8) scale *= double(a_scale[size_t(i * kb_count + kb)]);
        acc += partial * scale;
      }
      c[i * n + j] = float(acc);
    }
  }
}

void grouped_gemm_ref(const float* a, const int64_t* row_offsets, int64_t n_groups, const WeightMatrix* weights,
                      float* c, GemmMode mode) {
  for (int64_t g = 0; g < n_groups; ++g) {
    const int64_t r0 = row_offsets[g], rows = row_offsets[g + 1] - r0;
    gemm_ref(a + r0 * weights[g].k, rows, weights[g], c + r0 * weights[g].n, mode);
  }
}

}  // namespace deepmoe
