// Built with -march=x86-64-v3. Only raw loops and intrinsics here: inline functions shared with baseline
// translation units must not be instantiated in this file (the linker could keep the AVX2 copy).
#include "core/dtype_bulk_avx2.h"

#include <immintrin.h>

#include <cstring>

namespace deepmoe::avx2 {
namespace {

// Scalar tails repeat the exact algorithms of dtype.cpp so no shared inline function is emitted here.
inline float tail_f16_to_f32(uint16_t h) { return _cvtsh_ss(h); }
inline uint16_t tail_f32_to_f16(float f) { return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }

// 8 lanes of f32 → e4m3 codes (in the low byte of each 32-bit lane).
inline __m256i f32x8_to_e4m3(__m256 v) {
  const __m256i x = _mm256_castps_si256(v);
  const __m256i sign = _mm256_and_si256(_mm256_srli_epi32(x, 24), _mm256_set1_epi32(0x80));
  const __m256i ax = _mm256_and_si256(x, _mm256_set1_epi32(0x7FFFFFFF));
  // normal: round 23 → 3 mantissa bits, nearest even
  __m256i odd = _mm256_and_si256(_mm256_srli_epi32(ax, 20), _mm256_set1_epi32(1));
  __m256i r = _mm256_add_epi32(ax, _mm256_add_epi32(_mm256_set1_epi32(0x7FFFF), odd));
  __m256i normal = _mm256_sub_epi32(_mm256_srli_epi32(r, 20), _mm256_set1_epi32((127 - 7) << 3));
  // subnormal: round(|x|·512) with the default (nearest-even) rounding mode
  __m256i sub = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_castsi256_ps(ax), _mm256_set1_ps(512.0f)));
  __m256i is_sub = _mm256_cmpgt_epi32(_mm256_set1_epi32(0x3C800000), ax);
  __m256i code = _mm256_blendv_epi8(normal, sub, is_sub);
  __m256i is_sat = _mm256_cmpgt_epi32(ax, _mm256_set1_epi32(0x43E00000 - 1));
  code = _mm256_blendv_epi8(code, _mm256_set1_epi32(0x7E), is_sat);
  __m256i is_nan = _mm256_cmpgt_epi32(ax, _mm256_set1_epi32(0x7F800000));
  code = _mm256_blendv_epi8(code, _mm256_set1_epi32(0x7F), is_nan);
  return _mm256_or_si256(code, sign);
}

inline __m256i f32x8_to_e5m2(__m256 v) {
  const __m256i x = _mm256_castps_si256(v);
  const __m256i sign = _mm256_and_si256(_mm256_srli_epi32(x, 24), _mm256_set1_epi32(0x80));
  const __m256i ax = _mm256_and_si256(x, _mm256_set1_epi32(0x7FFFFFFF));
  __m256i odd = _mm256_and_si256(_mm256_srli_epi32(ax, 21), _mm256_set1_epi32(1));
  __m256i r = _mm256_add_epi32(ax, _mm256_add_epi32(_mm256_set1_epi32(0xFFFFF), odd));
  __m256i normal = _mm256_sub_epi32(_mm256_srli_epi32(r, 21), _mm256_set1_epi32((127 - 15) << 2));
  __m256i sub = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_castsi256_ps(ax), _mm256_set1_ps(65536.0f)));
  __m256i is_sub = _mm256_cmpgt_epi32(_mm256_set1_epi32(0x38800000), ax);
  __m256i code = _mm256_blendv_epi8(normal, sub, is_sub);
  __m256i is_inf = _mm256_cmpgt_epi32(ax, _mm256_set1_epi32(0x47700000 - 1));
  code = _mm256_blendv_epi8(code, _mm256_set1_epi32(0x7C), is_inf);
  __m256i is_nan = _mm256_cmpgt_epi32(ax, _mm256_set1_epi32(0x7F800000));
  code = _mm256_blendv_epi8(code, _mm256_set1_epi32(0x7E), is_nan);
  return _mm256_or_si256(code, sign);
}

// Low bytes of 8 32-bit lanes → 8 consecutive bytes.
inline void store_low_bytes(__m256i codes, uint8_t* out) {
  const __m256i shuffle = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                           0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  __m256i packed = _mm256_shuffle_epi8(codes, shuffle);
  uint32_t lo = uint32_t(_mm256_extract_epi32(packed, 0));
  uint32_t hi = uint32_t(_mm256_extract_epi32(packed, 4));
  std::memcpy(out, &lo, 4);
  std::memcpy(out + 4, &hi, 4);
}

template <typename Fn>
inline void tail_via_buffer_f32_to_u8(const float* in, uint8_t* out, size_t n, Fn to_codes) {
  // Pad the last < 8 values into a lane buffer so the tail uses the same vector code as the body.
  float buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::memcpy(buf, in, n * sizeof(float));
  uint8_t codes[8];
  store_low_bytes(to_codes(_mm256_loadu_ps(buf)), codes);
  std::memcpy(out, codes, n);
}

}  // namespace

void convert_bf16_to_f32(const uint16_t* in, float* out, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i)));
    _mm256_storeu_ps(out + i, _mm256_castsi256_ps(_mm256_slli_epi32(h, 16)));
  }
  for (; i < n; ++i) {
    uint32_t u = uint32_t(in[i]) << 16;
    std::memcpy(out + i, &u, 4);
  }
}

void convert_f32_to_bf16(const float* in, uint16_t* out, size_t n) {
  size_t i = 0;
  const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF), inf = _mm256_set1_epi32(0x7F800000);
  for (; i + 8 <= n; i += 8) {
    __m256i x = _mm256_castps_si256(_mm256_loadu_ps(in + i));
    __m256i odd = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
    __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(x, _mm256_add_epi32(_mm256_set1_epi32(0x7FFF), odd)), 16);
    __m256i nan = _mm256_or_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(0x40));
    __m256i is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, abs_mask), inf);
    __m256i r = _mm256_blendv_epi8(rounded, nan, is_nan);
    __m256i packed = _mm256_packus_epi32(r, r);  // lanes: [0..3 0..3 | 4..7 4..7]
    packed = _mm256_permute4x64_epi64(packed, 0x08);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm256_castsi256_si128(packed));
  }
  for (; i < n; ++i) {
    uint32_t x;
    std::memcpy(&x, in + i, 4);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) out[i] = uint16_t((x >> 16) | 0x40u);
    else out[i] = uint16_t((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
  }
}

void convert_f16_to_f32(const uint16_t* in, float* out, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))));
  for (; i < n; ++i) out[i] = tail_f16_to_f32(in[i]);
}

void convert_f32_to_f16(const float* in, uint16_t* out, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i) out[i] = tail_f32_to_f16(in[i]);
}

void convert_fp8_e4m3_to_f32(const uint8_t* in, float* out, size_t n) {
  // e4m3 moved into the fp16 bit layout (sign to bit 15, exponent+mantissa shifted by 7) is the same number
  // times 2^-8 (bias 7 vs 15), subnormals included; multiply back by 2^8. 0x7F/0xFF are NaN in e4m3.
  size_t i = 0;
  const __m256 two8 = _mm256_set1_ps(256.0f);
  for (; i + 8 <= n; i += 8) {
    uint64_t raw;
    std::memcpy(&raw, in + i, 8);
    __m128i b = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(int64_t(raw)));
    __m128i h = _mm_or_si128(_mm_slli_epi16(_mm_and_si128(b, _mm_set1_epi16(0x80)), 8),
                             _mm_slli_epi16(_mm_and_si128(b, _mm_set1_epi16(0x7F)), 7));
    __m256 f = _mm256_mul_ps(_mm256_cvtph_ps(h), two8);
    __m128i nan16 = _mm_cmpeq_epi16(_mm_and_si128(b, _mm_set1_epi16(0x7F)), _mm_set1_epi16(0x7F));
    __m256 nan_mask = _mm256_castsi256_ps(_mm256_cvtepi16_epi32(nan16));
    __m256 nan = _mm256_or_ps(_mm256_set1_ps(__builtin_nanf("")),
                              _mm256_and_ps(f, _mm256_castsi256_ps(_mm256_set1_epi32(int(0x80000000u)))));
    _mm256_storeu_ps(out + i, _mm256_blendv_ps(f, nan, nan_mask));
  }
  for (; i < n; ++i) {
    uint8_t b = in[i];
    uint16_t h = uint16_t(((b & 0x80) << 8) | ((b & 0x7F) << 7));
    float f = tail_f16_to_f32(h) * 256.0f;
    if ((b & 0x7F) == 0x7F) f = (b & 0x80) ? -__builtin_nanf("") : __builtin_nanf("");
    out[i] = f;
  }
}

void convert_f32_to_fp8_e4m3(const float* in, uint8_t* out, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) store_low_bytes(f32x8_to_e4m3(_mm256_loadu_ps(in + i)), out + i);
  if (i < n) tail_via_buffer_f32_to_u8(in + i, out + i, n - i, f32x8_to_e4m3);
}

void convert_fp8_e5m2_to_f32(const uint8_t* in, float* out, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t raw;
    std::memcpy(&raw, in + i, 8);
    __m128i h = _mm_slli_epi16(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(int64_t(raw))), 8);
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) out[i] = tail_f16_to_f32(uint16_t(in[i] << 8));
}

void convert_f32_to_fp8_e5m2(const float* in, uint8_t* out, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) store_low_bytes(f32x8_to_e5m2(_mm256_loadu_ps(in + i)), out + i);
  if (i < n) tail_via_buffer_f32_to_u8(in + i, out + i, n - i, f32x8_to_e5m2);
}

}  // namespace deepmoe::avx2
