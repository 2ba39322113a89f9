#include "kernels/exp_f32.h"

#include <bit>
#include <cmath>

namespace deepmoe {

float exp_f32(float x) {
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

}  // namespace deepmoe
