// AVX2/F16C bulk conversions; call only when cpu_features().level >= Avx2. Bit-identical to core/dtype.h.
#pragma once

#include <cstddef>
#include <cstdint>

namespace deepmoe::avx2 {

void convert_bf16_to_f32(const uint16_t* in, float* out, size_t n);
void convert_f32_to_bf16(const float* in, uint16_t* out, size_t n);
void convert_f16_to_f32(const uint16_t* in, float* out, size_t n);
void convert_f32_to_f16(const float* in, uint16_t* out, size_t n);
void convert_fp8_e4m3_to_f32(const uint8_t* in, float* out, size_t n);
void convert_f32_to_fp8_e4m3(const float* in, uint8_t* out, size_t n);
void convert_fp8_e5m2_to_f32(const uint8_t* in, float* out, size_t n);
void convert_f32_to_fp8_e5m2(const float* in, uint8_t* out, size_t n);

}  // namespace deepmoe::avx2
