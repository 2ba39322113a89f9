// e^x in FP32 by one fixed sequence of double-precision operations, so that a scalar loop and a vector loop give
// the same bits (the attention cores' softmax: scalar, AVX2 and AVX-512 must agree bit for bit, and the AVX-512
// softmax takes 16 at a time). It is the algorithm of glibc's expf (a 32-entry table of 2^(i/32), a degree-3
// polynomial, fused multiply-adds where glibc's FMA build fuses them): on glibc 2.36 it returns std::exp's bits
// for every x with |x| < 88, and for the rest (the tiny or huge results, infinities, NaN) it calls std::exp.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

namespace deepmoe {

// The constants as bit patterns: kExp2Table[i] = bits(2^(i/32)) - (i << 47).
namespace exp_f32_detail {
inline constexpr uint64_t kExp2Table[32] = {
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51, 0x3fef72b83c7d517b,
    0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1, 0x3fef06fe0a31b715, 0x3feef1a7373aa9cb,
    0x3feedea64c123422, 0x3feece086061892d, 0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429,
    0x3feea47eb03a5585, 0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d, 0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069, 0x3fef5818dcfba487, 0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da, 0x3fefd0765b6e4540};
inline constexpr uint64_t kInvLn2Scaled = 0x40471547652b82fe;  // 32 / ln 2
inline constexpr uint64_t kShift = 0x4338000000000000;         // 0x1.8p52: adding it rounds to an integer
inline constexpr uint64_t kPoly[3] = {0x3ebc6af84b912394, 0x3f2ebfce50fac4f3, 0x3f962e42ff0c52d6};
// The polynomial holds for |x| below 88: bits 20-30 of x at most this (0x42a = exponent and top mantissa of 80).
inline constexpr uint32_t kMaxTop = 0x42a;
}  // namespace exp_f32_detail

// e^x: for |x| < 88 (and some above) by the fixed sequence, otherwise std::exp(x). Defined here with internal
// linkage, so that a file built for FMA (the AVX2 and AVX-512 loops) turns std::fma into one instruction and a
// baseline file keeps its own copy (the same bits: every step is rounded once either way).
static inline float exp_f32(float x) {
  using namespace exp_f32_detail;
  if (((std::bit_cast<uint32_t>(x) >> 20) & 0x7ff) > kMaxTop) return std::exp(x);
  const double xd = x, inv_ln2 = std::bit_cast<double>(kInvLn2Scaled), shift = std::bit_cast<double>(kShift);
  // k = round(x · 32 / ln 2) (in the low bits of k_shifted), r = x · 32 / ln 2 − k exactly rounded once.
  const double k_shifted = std::fma(inv_ln2, xd, shift);
  const uint64_t ki = std::bit_cast<uint64_t>(k_shifted);
  const double k = k_shifted - shift;
  const double r = std::fma(inv_ln2, xd, -k);
  // 2^(k/32) = 2^(k mod 32 / 32) · 2^(k div 32), the second factor added to the exponent bits.
  const double s = std::bit_cast<double>(kExp2Table[ki % 32] + (ki << 47));
  const double z = std::fma(r, std::bit_cast<double>(kPoly[0]), std::bit_cast<double>(kPoly[1]));
  const double r2 = r * r;
  const double y = std::fma(r, std::bit_cast<double>(kPoly[2]), 1.0);
  return float(std::fma(z, r2, y) * s);
}

// The attention cores' softmax over s[0..n) in place (the row sums to 1): the maximum, exp_f32 of each value minus
// it, the sum in increasing index, the reciprocal and the products. Internal linkage as exp_f32.
static inline void softmax_row_f32(float* s, int64_t n) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t t = 0; t < n; ++t) mx = s[t] > mx ? s[t] : mx;
  float sum = 0;
  for (int64_t t = 0; t < n; ++t) {
    s[t] = exp_f32(s[t] - mx);
    sum += s[t];
  }
  const float inv = 1.0f / sum;
  for (int64_t t = 0; t < n; ++t) s[t] *= inv;
}

}  // namespace deepmoe
