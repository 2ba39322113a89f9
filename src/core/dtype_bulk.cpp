// Bulk conversions: dispatch to the AVX2/F16C kernels when present; the scalar loops are the specification.
#include "core/cpu_features.h"
#include "core/dtype.h"
#include "core/dtype_bulk_avx2.h"
#include "core/error.h"

namespace deepmoe {
namespace {
bool use_avx2() { return cpu_features().level >= IsaLevel::Avx2; }
}  // namespace

void convert_bf16_to_f32(const uint16_t* in, float* out, size_t n) {
  if (use_avx2()) return avx2::convert_bf16_to_f32(in, out, n);
  for (size_t i = 0; i < n; ++i) out[i] = bf16_to_f32(in[i]);
}
void convert_f32_to_bf16(const float* in, uint16_t* out, size_t n) {
  if (use_avx2()) return avx2::convert_f32_to_bf16(in, out, n);
  for (size_t i = 0; i < n; ++i) out[i] = f32_to_bf16(in[i]);
}
void convert_f16_to_f32(const uint16_t* in, float* out, size_t n) {
  if (use_avx2()) return avx2::convert_f16_to_f32(in, out, n);
  for (size_t i = 0; i < n; ++i) out[i] = f16_to_f32(in[i]);
}
void convert_f32_to_f16(const float* in, uint16_t* out, size_t n) {
  if (use_avx2()) return avx2::convert_f32_to_f16(in, out, n);
  for (size_t i = 0; i < n; ++i) out[i] = f32_to_f16(in[i]);
}
void convert_fp8_e4m3_to_f32(const uint8_t* in, float* out, size_t n) {
  if (use_avx2()) return avx2::convert_fp8_e4m3_to_f32(in, out, n);
  for (size_t i = 0; i < n; ++i) out[i] = fp8_e4m3_to_f32(in[i]);
}
void convert_f32_to_fp8_e4m3(const float* in, uint8_t* out, size_t n) {
  if (use_avx2()) return avx2::convert_f32_to_fp8_e4m3(in, out, n);
  for (size_t i = 0; i < n; ++i) out[i] = f32_to_fp8_e4m3(in[i]);
}
void convert_fp8_e5m2_to_f32(const uint8_t* in, float* out, size_t n) {
  if (use_avx2()) return avx2::convert_fp8_e5m2_to_f32(in, out, n);
  for (size_t i = 0; i < n; ++i) out[i] = fp8_e5m2_to_f32(in[i]);
}
void convert_f32_to_fp8_e5m2(const float* in, uint8_t* out, size_t n) {
  if (use_avx2()) return avx2::convert_f32_to_fp8_e5m2(in, out, n);
  for (size_t i = 0; i < n; ++i) out[i] = f32_to_fp8_e5m2(in[i]);
}

void convert_to_f32(DType t, const void* in, float* out, size_t n) {
  switch (t) {
    case DType::F32: {
      const float* p = static_cast<const float*>(in);
      for (size_t i = 0; i < n; ++i) out[i] = p[i];
      return;
    }
    case DType::F64: {
      const double* p = static_cast<const double*>(in);
      for (size_t i = 0; i < n; ++i) out[i] = float(p[i]);
      return;
    }
    case DType::BF16: return convert_bf16_to_f32(static_cast<const uint16_t*>(in), out, n);
    case DType::F16: return convert_f16_to_f32(static_cast<const uint16_t*>(in), out, n);
    case DType::F8_E4M3: return convert_fp8_e4m3_to_f32(static_cast<const uint8_t*>(in), out, n);
    case DType::F8_E5M2: return convert_fp8_e5m2_to_f32(static_cast<const uint8_t*>(in), out, n);
    default: DEEPMOE_CHECK(false, "convert_to_f32 on a non-float dtype");
  }
}

}  // namespace deepmoe
