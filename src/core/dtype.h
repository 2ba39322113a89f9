// Element types and scalar conversions.
//
// Rounding is round-to-nearest-even everywhere. Choices for values a format cannot hold:
// - bf16, fp16: IEEE behaviour — overflow becomes ±inf, NaN stays NaN (quiet, top payload bits kept).
// - fp8 e4m3fn (max 448, no infinities, 0x7F/0xFF are NaN): finite overflow and ±inf SATURATE to ±448, as
//   FP8 quantizers do (the scale maps amax to 448 and rounding must not turn it into NaN); NaN → 0x7F|sign.
// - fp8 e5m2 (max 57344, has infinities): IEEE behaviour like fp16 — overflow becomes ±inf, NaN → 0x7E|sign.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace deepmoe {

enum class DType : uint8_t { F64, F32, F16, BF16, F8_E4M3, F8_E5M2, I64, I32, I16, I8, U8, BOOL };

size_t dtype_size_bytes(DType t);
// The safetensors spelling ("F32", "BF16", "F8_E4M3", ...).
std::string_view dtype_name(DType t);
std::optional<DType> dtype_from_name(std::string_view name);
bool dtype_is_float(DType t);

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

constexpr float kFp8E4m3Max = 448.0f;
constexpr float kFp8E5m2Max = 57344.0f;

inline float bf16_to_f32(uint16_t h) { return bits_float(uint32_t(h) << 16); }
uint16_t f32_to_bf16(float f);
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
float fp8_e4m3_to_f32(uint8_t b);
uint8_t f32_to_fp8_e4m3(float f);
float fp8_e5m2_to_f32(uint8_t b);
uint8_t f32_to_fp8_e5m2(float f);

// Bulk conversions (AVX2/F16C when the CPU has them, else scalar; results are bit-identical to the scalar
// functions above). `n` may be any count.
void convert_bf16_to_f32(const uint16_t* in, float* out, size_t n);
void convert_f32_to_bf16(const float* in, uint16_t* out, size_t n);
void convert_f16_to_f32(const uint16_t* in, float* out, size_t n);
void convert_f32_to_f16(const float* in, uint16_t* out, size_t n);
void convert_fp8_e4m3_to_f32(const uint8_t* in, float* out, size_t n);
void convert_f32_to_fp8_e4m3(const float* in, uint8_t* out, size_t n);
void convert_fp8_e5m2_to_f32(const uint8_t* in, float* out, size_t n);
void convert_f32_to_fp8_e5m2(const float* in, uint8_t* out, size_t n);

// Any float dtype → f32 (F64, F32, F16, BF16, F8_*); aborts on a non-float dtype (caller's bug).
void convert_to_f32(DType t, const void* in, float* out, size_t n);

}  // namespace deepmoe
