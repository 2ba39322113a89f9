#include "kernels/quantize.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/dtype.h"
#include "core/thread_pool.h"

namespace deepmoe {

float fp8_tile_scale(float amax, bool ue8m0) {
  float s = std::max(amax, kQuantAmaxFloor) / kFp8E4m3Max;
  if (ue8m0) {
    // 2^ceil(log2 s), exactly: a power of two stays, anything else goes to the next power of two. Computed on
    // the bits so no log2 rounding can pick the wrong power (s is a positive normal number here).
    uint32_t u = float_bits(s);
    if (u & 0x007FFFFFu) u = (u & 0xFF800000u) + 0x00800000u;
    s = bits_float(u);
  }
  return s;
}

// ---------------------------------------------------------------------------------------------------------------
// Plain-loop specifications.

void quantize_act_1x128_ref(const float* x, int64_t m, int64_t k, uint8_t* q, float* scales, bool ue8m0) {
  const int64_t kb_count = quant_blocks(k);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t kb = 0; kb < kb_count; ++kb) {
      const int64_t k0 = kb * kQuantBlock, k1 = std::min(k, k0 + kQuantBlock);
      float amax = 0;
      for (int64_t c = k0; c < k1; ++c) amax = std::max(amax, std::fabs(x[i * k + c]));
      const float s = fp8_tile_scale(amax, ue8m0);
      scales[i * kb_count + kb] = s;
      for (int64_t c = k0; c < k1; ++c) q[i * k + c] = f32_to_fp8_e4m3(x[i * k + c] / s);
    }
  }
}

void quantize_act_128x1_ref(const float* x, int64_t m, int64_t k, uint8_t* q, float* scales, bool ue8m0) {
  const int64_t mb_count = quant_blocks(m);
  for (int64_t mb = 0; mb < mb_count; ++mb) {
    const int64_t r0 = mb * kQuantBlock, r1 = std::min(m, r0 + kQuantBlock);
    for (int64_t c = 0; c < k; ++c) {
      float amax = 0;
      for (int64_t r = r0; r < r1; ++r) amax = std::max(amax, std::fabs(x[r * k + c]));
      const float s = fp8_tile_scale(amax, ue8m0);
      scales[mb * k + c] = s;
      for (int64_t r = r0; r < r1; ++r) q[r * k + c] = f32_to_fp8_e4m3(x[r * k + c] / s);
    }
  }
}

void quantize_weight_128x128_ref(const float* w, int64_t n, int64_t k, uint8_t* q, float* scale_inv) {
  const int64_t nb_count = quant_blocks(n), kb_count = quant_blocks(k);
  for (int64_t nb = 0; nb < nb_count; ++nb) {
    for (int64_t kb = 0; kb < kb_count; ++kb) {
      const int64_t r0 = nb * kQuantBlock, r1 = std::min(n, r0 + kQuantBlock);
      const int64_t c0 = kb * kQuantBlock, c1 = std::min(k, c0 + kQuantBlock);
      float amax = 0;  // the zero padding of an edge block cannot raise it
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(w[r * k + c]));
      const float s = fp8_tile_scale(amax, false);
      scale_inv[nb * kb_count + kb] = s;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) q[r * k + c] = f32_to_fp8_e4m3(w[r * k + c] / s);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Fast versions: the same arithmetic (amax, one division per element, the bulk e4m3 encoder that is
// bit-identical to f32_to_fp8_e4m3), laid out so the compiler vectorizes the amax and divide loops and the
// encoder runs on whole rows.

namespace {

float abs_max(const float* x, int64_t n) {
  float amax = 0;
  for (int64_t c = 0; c < n; ++c) amax = std::max(amax, std::fabs(x[c]));
  return amax;
}

}  // namespace

void quantize_act_1x128(const float* x, int64_t m, int64_t k, uint8_t* q, float* scales, bool ue8m0,
                        ThreadPool* pool) {
  const int64_t kb_count = quant_blocks(k);
  parallel_for(pool, m, [&](int64_t i0, int64_t i1) {
    std::vector<float> scaled(size_t(std::max<int64_t>(k, 1)));
    for (int64_t i = i0; i < i1; ++i) {
      const float* xr = x + i * k;
      for (int64_t kb = 0; kb < kb_count; ++kb) {
        const int64_t c0 = kb * kQuantBlock, len = std::min(kQuantBlock, k - c0);
        const float s = fp8_tile_scale(abs_max(xr + c0, len), ue8m0);
        scales[i * kb_count + kb] = s;
        for (int64_t c = 0; c < len; ++c) scaled[size_t(c0 + c)] = xr[c0 + c] / s;
      }
      convert_f32_to_fp8_e4m3(scaled.data(), q + i * k, size_t(k));
    }
  }, 4);
}

void quantize_act_128x1(const float* x, int64_t m, int64_t k, uint8_t* q, float* scales, bool ue8m0,
                        ThreadPool* pool) {
  const int64_t mb_count = quant_blocks(m);
  parallel_for(pool, mb_count, [&](int64_t b0, int64_t b1) {
    std::vector<float> amax(static_cast<size_t>(k)), scaled(static_cast<size_t>(k));
    for (int64_t mb = b0; mb < b1; ++mb) {
      const int64_t r0 = mb * kQuantBlock, r1 = std::min(m, r0 + kQuantBlock);
      std::fill(amax.begin(), amax.end(), 0.0f);
      for (int64_t r = r0; r < r1; ++r) {
        const float* xr = x + r * k;
        for (int64_t c = 0; c < k; ++c) amax[size_t(c)] = std::max(amax[size_t(c)], std::fabs(xr[c]));
      }
      float* s = scales + mb * k;
      for (int64_t c = 0; c < k; ++c) s[c] = fp8_tile_scale(amax[size_t(c)], ue8m0);
      for (int64_t r = r0; r < r1; ++r) {
        const float* xr = x + r * k;
        for (int64_t c = 0; c < k; ++c) scaled[size_t(c)] = xr[c] / s[c];
        convert_f32_to_fp8_e4m3(scaled.data(), q + r * k, size_t(k));
      }
    }
  });
}

void quantize_weight_128x128(const float* w, int64_t n, int64_t k, uint8_t* q, float* scale_inv, ThreadPool* pool) {
  const int64_t nb_count = quant_blocks(n), kb_count = quant_blocks(k);
  parallel_for(pool, nb_count, [&](int64_t b0, int64_t b1) {
    std::vector<float> scaled(static_cast<size_t>(k));
    for (int64_t nb = b0; nb < b1; ++nb) {
      const int64_t r0 = nb * kQuantBlock, r1 = std::min(n, r0 + kQuantBlock);
      float* s = scale_inv + nb * kb_count;
      for (int64_t kb = 0; kb < kb_count; ++kb) {
        const int64_t c0 = kb * kQuantBlock, len = std::min(kQuantBlock, k - c0);
        float amax = 0;
        for (int64_t r = r0; r < r1; ++r) amax = std::max(amax, abs_max(w + r * k + c0, len));
        s[kb] = fp8_tile_scale(amax, false);
      }
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t kb = 0; kb < kb_count; ++kb) {
          const int64_t c0 = kb * kQuantBlock, len = std::min(kQuantBlock, k - c0);
          for (int64_t c = c0; c < c0 + len; ++c) scaled[size_t(c)] = w[r * k + c] / s[kb];
        }
        convert_f32_to_fp8_e4m3(scaled.data(), q + r * k, size_t(k));
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Dequantization and re-tiling.

void dequantize_act_1x128(const uint8_t* q, const float* scales, int64_t m, int64_t k, float* out) {
  const int64_t kb_count = quant_blocks(k);
  for (int64_t i = 0; i < m; ++i) {
    convert_fp8_e4m3_to_f32(q + i * k, out + i * k, size_t(k));
    for (int64_t c = 0; c < k; ++c) out[i * k + c] *= scales[i * kb_count + c / kQuantBlock];
  }
}

void dequantize_act_128x1(const uint8_t* q, const float* scales, int64_t m, int64_t k, float* out) {
  for (int64_t i = 0; i < m; ++i) {
    convert_fp8_e4m3_to_f32(q + i * k, out + i * k, size_t(k));
    const float* s = scales + (i / kQuantBlock) * k;
    for (int64_t c = 0; c < k; ++c) out[i * k + c] *= s[c];
  }
}

void dequantize_weight_128x128(const uint8_t* q, const float* scale_inv, int64_t n, int64_t k, float* out) {
  const int64_t kb_count = quant_blocks(k);
  for (int64_t r = 0; r < n; ++r) {
    convert_fp8_e4m3_to_f32(q + r * k, out + r * k, size_t(k));
    const float* s = scale_inv + (r / kQuantBlock) * kb_count;
    for (int64_t c = 0; c < k; ++c) out[r * k + c] *= s[c / kQuantBlock];
  }
}

void requantize_1x128_to_128x1(const uint8_t* q, const float* scales, int64_t m, int64_t k, uint8_t* q_out,
                               float* scales_out, bool ue8m0) {
  std::vector<float> x(size_t(m * k));
  dequantize_act_1x128(q, scales, m, k, x.data());
  quantize_act_128x1(x.data(), m, k, q_out, scales_out, ue8m0);
}

void requantize_128x1_to_1x128(const uint8_t* q, const float* scales, int64_t m, int64_t k, uint8_t* q_out,
                               float* scales_out, bool ue8m0) {
  std::vector<float> x(size_t(m * k));
  dequantize_act_128x1(q, scales, m, k, x.data());
  quantize_act_1x128(x.data(), m, k, q_out, scales_out, ue8m0);
}

bool fp8_e4m3_has_nan(const uint8_t* q, int64_t n) {
  bool nan = false;
  for (int64_t i = 0; i < n; ++i) nan |= (q[i] & 0x7F) == 0x7F;
  return nan;
}

}  // namespace deepmoe
