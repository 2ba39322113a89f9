#include "core/dtype.h"

#include <cmath>

#include "core/error.h"

namespace deepmoe {

size_t dtype_size_bytes(DType t) {
  switch (t) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: return 2;
    case DType::F8_E4M3: case DType::F8_E5M2: case DType::I8: case DType::U8: case DType::BOOL: return 1;
  }
  DEEPMOE_CHECK(false, "unknown dtype");
}

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F64: return "F64";
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F8_E4M3: return "F8_E4M3";
    case DType::F8_E5M2: return "F8_E5M2";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
  }
  DEEPMOE_CHECK(false, "unknown dtype");
}

std::optional<DType> dtype_from_name(std::string_view name) {
  for (DType t : {DType::F64, DType::F32, DType::F16, DType::BF16, DType::F8_E4M3, DType::F8_E5M2, DType::I64,
                  DType::I32, DType::I16, DType::I8, DType::U8, DType::BOOL}) {
    if (dtype_name(t) == name) return t;
  }
  return std::nullopt;
}

bool dtype_is_float(DType t) {
  switch (t) {
    case DType::F64: case DType::F32: case DType::F16: case DType::BF16: case DType::F8_E4M3: case DType::F8_E5M2:
      return true;
    default:
      return false;
  }
}

uint16_t f32_to_bf16(float f) {
  uint32_t x = float_bits(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t((x >> 16) | 0x0040u);  // quiet NaN, keep sign/payload
  x += 0x7FFFu + ((x >> 16) & 1u);                                               // round to nearest even
  return uint16_t(x >> 16);
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t em = h & 0x7FFFu;
  if (em == 0x7C00u) return bits_float(sign | 0x7F800000u);                           // inf
  if (em > 0x7C00u) return bits_float(sign | 0x7FC00000u | ((em & 0x3FFu) << 13));   // NaN, quieted as F16C does
  if (em >= 0x0400u) return bits_float(sign | ((em << 13) + ((127u - 15u) << 23)));  // normal
  return bits_float(sign | float_bits(float(em) * 0x1p-24f));                        // subnormal / zero
}

uint16_t f32_to_f16(float f) {
  uint32_t x = float_bits(f);
  uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  uint32_t ax = x & 0x7FFFFFFFu;
  if (ax > 0x7F800000u) return uint16_t(sign | 0x7E00u | ((ax >> 13) & 0x3FFu));  // NaN (quiet)
  if (ax >= 0x477FF000u) return uint16_t(sign | 0x7C00u);                          // ≥ 65520 rounds to inf
  if (ax < 0x38800000u) {
    // Below the smallest normal (2^-14): adding 0.5 (ulp 2^-24) rounds |f|·2^24 to nearest even in the FPU.
    float t = bits_float(ax) + 0.5f;
    return uint16_t(sign | (float_bits(t) - 0x3F000000u));
  }
  ax += ((15u - 127u) << 23) + 0xFFFu + ((ax >> 13) & 1u);
  return uint16_t(sign | (ax >> 13));
}

float fp8_e4m3_to_f32(uint8_t b) {
  float sign = (b & 0x80) ? -1.0f : 1.0f;
  int e = (b >> 3) & 0xF, m = b & 7;
  if (e == 15 && m == 7) return std::copysign(NAN, sign);
  if (e == 0) return sign * float(m) * 0x1p-9f;
  return sign * std::ldexp(1.0f + float(m) / 8.0f, e - 7);
}

uint8_t f32_to_fp8_e4m3(float f) {
  uint32_t x = float_bits(f);
  uint8_t sign = uint8_t((x >> 24) & 0x80u);
  uint32_t ax = x & 0x7FFFFFFFu;
  if (ax > 0x7F800000u) return uint8_t(sign | 0x7F);      // NaN
  if (ax >= 0x43E00000u) return uint8_t(sign | 0x7E);     // ≥ 448 (and inf) saturate to 448
  if (ax < 0x3C800000u) {                                 // below 2^-6: subnormal, step 2^-9
    return uint8_t(sign | uint8_t(std::nearbyint(bits_float(ax) * 512.0f)));
  }
  uint32_t r = ax + 0x7FFFFu + ((ax >> 20) & 1u);         // round 23 → 3 mantissa bits, nearest even
  return uint8_t(sign | ((r >> 20) - ((127u - 7u) << 3)));
}

float fp8_e5m2_to_f32(uint8_t b) { return f16_to_f32(uint16_t(b) << 8); }  // e5m2 is the top byte of fp16

uint8_t f32_to_fp8_e5m2(float f) {
  uint32_t x = float_bits(f);
  uint8_t sign = uint8_t((x >> 24) & 0x80u);
  uint32_t ax = x & 0x7FFFFFFFu;
  if (ax > 0x7F800000u) return uint8_t(sign | 0x7E);      // NaN
  if (ax >= 0x47700000u) return uint8_t(sign | 0x7C);     // ≥ 61440 (halfway to 65536) rounds to inf
  if (ax < 0x38800000u) {                                 // below 2^-14: subnormal, step 2^-16
    return uint8_t(sign | uint8_t(std::nearbyint(bits_float(ax) * 65536.0f)));
  }
  uint32_t r = ax + 0xFFFFFu + ((ax >> 21) & 1u);         // round 23 → 2 mantissa bits, nearest even
  return uint8_t(sign | ((r >> 21) - ((127u - 15u) << 2)));
}

}  // namespace deepmoe
