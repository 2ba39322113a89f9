// fp8/bf16/fp16 conversions: exhaustive over every code, RNE checked against a brute-force nearest-value
// reference computed in double, and the AVX2 bulk paths checked bit-for-bit against the scalar functions.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>
#include <vector>

#include "core/cpu_features.h"
#include "core/dtype.h"
#include "core/dtype_bulk_avx2.h"

using namespace deepmoe;

namespace {

// Independent reference: nearest representable finite value in double, ties to the even code.
// `saturate` selects e4m3's choice (clamp to max finite) vs IEEE overflow to infinity.
template <typename Decode>
uint32_t nearest_code(double x, int n_codes, Decode decode, bool saturate, uint32_t inf_code, double max_finite) {
  uint32_t sign_bit = n_codes == 256 ? 0x80u : 0x8000u;
  bool neg = std::signbit(x);
  double a = std::fabs(x);
  if (a > max_finite) {
    if (saturate) {
      for (int c = 0; c < n_codes / 2; ++c)
        if (decode(c) == max_finite) return (neg ? sign_bit : 0) | uint32_t(c);
    }
    // IEEE: above max_finite + half an ulp of the top binade → inf; exactly half → even rule (max is odd) → inf.
  }
  uint32_t best = 0;
  double best_d = INFINITY;
  for (int c = 0; c < n_codes / 2; ++c) {
    double v = decode(c);
    if (!std::isfinite(v)) continue;
    double d = std::fabs(v - a);
    if (d < best_d || (d == best_d && (c & 1) == 0)) best = uint32_t(c), best_d = d;
  }
  if (!saturate && a > max_finite) {
    // Compare against the would-be next binade value (2 × top binade start) to decide overflow.
    double next = max_finite + (max_finite - decode(int(best) - 1));
    if (std::fabs(next - a) <= best_d) return (neg ? sign_bit : 0) | inf_code;
  }
  return (neg ? sign_bit : 0) | best;
}

std::vector<float> interesting_floats(size_t n_random, uint32_t seed) {
  std::vector<float> v = {0.0f, -0.0f, 1.0f, -1.0f, 448.0f, 449.0f, 464.0f, 465.0f, 480.0f, 1e9f, -1e9f,
                          INFINITY, -INFINITY, NAN, -NAN, 0x1p-6f, 0x1p-7f, 0x1p-9f, 0x1p-10f, 0x1.8p-10f,
                          0x1p-11f, 57344.0f, 61439.0f, 61440.0f, 65504.0f, 65519.0f, 65520.0f, 0x1p-14f, 0x1p-24f,
                          0x1p-25f, 0x1.8p-25f, 0x1p-26f, 3.0e-41f, 1.17549435e-38f};
  std::mt19937 rng(seed);
  std::uniform_int_distribution<uint32_t> bits;
  std::uniform_real_distribution<float> expo(-30.0f, 20.0f);
  for (size_t i = 0; i < n_random; ++i) {
    if (i % 2) v.push_back(bits_float(bits(rng)));  // every bit pattern, NaNs included
    else v.push_back(std::ldexp(1.0f + float(bits(rng) % 4096) / 4096.0f, int(expo(rng))) * ((i & 2) ? -1.0f : 1.0f));
  }
  return v;
}

bool same_float_bits(float a, float b) { return float_bits(a) == float_bits(b); }

}  // namespace

TEST(Fp8E4m3, AllCodesDecodeAsSpecified) {
  for (int c = 0; c < 256; ++c) {
    float v = fp8_e4m3_to_f32(uint8_t(c));
    int e = (c >> 3) & 15, m = c & 7;
    double expect = (e == 0) ? m * std::ldexp(1.0, -9) : (1.0 + m / 8.0) * std::ldexp(1.0, e - 7);
    if (c & 0x80) expect = -expect;
    if ((c & 0x7F) == 0x7F) {
      EXPECT_TRUE(std::isnan(v)) << c;
      EXPECT_EQ(std::signbit(v), bool(c & 0x80));
    } else {
      EXPECT_EQ(double(v), expect) << c;
    }
  }
  EXPECT_EQ(fp8_e4m3_to_f32(0x7E), 448.0f);
  EXPECT_EQ(fp8_e4m3_to_f32(0xFE), -448.0f);
  EXPECT_EQ(fp8_e4m3_to_f32(0x01), 0x1p-9f);
}

TEST(Fp8E4m3, AllCodesRoundTrip) {
  for (int c = 0; c < 256; ++c) {
    uint8_t back = f32_to_fp8_e4m3(fp8_e4m3_to_f32(uint8_t(c)));
    if ((c & 0x7F) == 0x7F) EXPECT_EQ(back, c) << "NaN keeps its sign and canonical code";
    else EXPECT_EQ(back, c) << c;
  }
}

TEST(Fp8E4m3, SaturatesAndKeepsNan) {
  EXPECT_EQ(f32_to_fp8_e4m3(448.0f), 0x7E);
  EXPECT_EQ(f32_to_fp8_e4m3(1000.0f), 0x7E);
  EXPECT_EQ(f32_to_fp8_e4m3(-1e30f), 0xFE);
  EXPECT_EQ(f32_to_fp8_e4m3(INFINITY), 0x7E);
  EXPECT_EQ(f32_to_fp8_e4m3(-INFINITY), 0xFE);
  EXPECT_EQ(f32_to_fp8_e4m3(NAN), 0x7F);
  EXPECT_EQ(f32_to_fp8_e4m3(-NAN), 0xFF);
  EXPECT_EQ(f32_to_fp8_e4m3(0x1p-11f), 0x00) << "half of the smallest subnormal ties to even (zero)";
  EXPECT_EQ(f32_to_fp8_e4m3(0x1.8p-10f), 0x01) << "0.75 ulp rounds up";
}

TEST(Fp8E4m3, RoundsToNearestEvenLikeBruteForce) {
  auto decode = [](int c) { return double(fp8_e4m3_to_f32(uint8_t(c))); };
  for (float x : interesting_floats(20000, 1)) {
    if (std::isnan(x)) continue;
    uint32_t expect = nearest_code(double(x), 256, decode, true, 0, 448.0);
    ASSERT_EQ(f32_to_fp8_e4m3(x), expect) << x;
  }
  // Every midpoint between adjacent codes goes to the even one.
  for (int c = 0; c < 0x7E; ++c) {
    float mid = (fp8_e4m3_to_f32(uint8_t(c)) + fp8_e4m3_to_f32(uint8_t(c + 1))) / 2;
    EXPECT_EQ(f32_to_fp8_e4m3(mid), (c & 1) ? c + 1 : c) << c;
  }
}

TEST(Fp8E5m2, AllCodesDecodeAndRoundTrip) {
  for (int c = 0; c < 256; ++c) {
    float v = fp8_e5m2_to_f32(uint8_t(c));
    int e = (c >> 2) & 31, m = c & 3;
    if (e == 31) {
      if (m == 0) EXPECT_TRUE(std::isinf(v)) << c;
      else EXPECT_TRUE(std::isnan(v)) << c;
      continue;
    }
    double expect = (e == 0) ? m * std::ldexp(1.0, -16) : (1.0 + m / 4.0) * std::ldexp(1.0, e - 15);
    if (c & 0x80) expect = -expect;
    EXPECT_EQ(double(v), expect) << c;
    EXPECT_EQ(f32_to_fp8_e5m2(v), c) << c;
  }
  EXPECT_EQ(f32_to_fp8_e5m2(57344.0f), 0x7B);
  EXPECT_EQ(f32_to_fp8_e5m2(61439.0f), 0x7B);
  EXPECT_EQ(f32_to_fp8_e5m2(61440.0f), 0x7C) << "overflow past the halfway point becomes inf";
  EXPECT_EQ(f32_to_fp8_e5m2(-INFINITY), 0xFC);
  EXPECT_EQ(f32_to_fp8_e5m2(NAN), 0x7E);
}

TEST(Fp8E5m2, RoundsToNearestEvenLikeBruteForce) {
  auto decode = [](int c) { return double(fp8_e5m2_to_f32(uint8_t(c))); };
  for (float x : interesting_floats(20000, 2)) {
    if (std::isnan(x)) continue;
    uint32_t expect = nearest_code(double(x), 256, decode, false, 0x7C, 57344.0);
    ASSERT_EQ(f32_to_fp8_e5m2(x), expect) << x;
  }
}

TEST(Bf16, All65536CodesRoundTrip) {
  for (uint32_t c = 0; c < 65536; ++c) {
    float v = bf16_to_f32(uint16_t(c));
    uint16_t back = f32_to_bf16(v);
    if (std::isnan(v)) {
      EXPECT_TRUE(std::isnan(bf16_to_f32(back)));
      EXPECT_EQ(back, uint16_t(c | 0x40)) << "NaN is quieted, payload kept";
    } else {
      ASSERT_EQ(back, c) << c;
    }
  }
}

TEST(Bf16, RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(bits_float(0x3F808000u)), 0x3F80) << "tie to even (down)";
  EXPECT_EQ(f32_to_bf16(bits_float(0x3F818000u)), 0x3F82) << "tie to even (up)";
  EXPECT_EQ(f32_to_bf16(bits_float(0x3F808001u)), 0x3F81);
  EXPECT_EQ(f32_to_bf16(bits_float(0x7F7FFFFFu)), 0x7F80) << "max float rounds to inf";
  for (float x : interesting_floats(20000, 3)) {
    if (std::isnan(x)) continue;
    if (std::isinf(x)) {
      EXPECT_EQ(f32_to_bf16(x), std::signbit(x) ? 0xFF80 : 0x7F80);
      continue;
    }
    // Reference in double: the two bf16 neighbours, nearest wins, ties to even.
    uint32_t u = float_bits(x);
    uint16_t lo = uint16_t(u >> 16), hi = uint16_t(lo + 1);
    double dl = std::fabs(double(bf16_to_f32(lo)) - x), dh = std::fabs(double(bf16_to_f32(hi)) - x);
    if ((hi & 0x7FFF) == 0x7F80) dh = std::fabs(std::ldexp(1.0, 128) * (std::signbit(x) ? -1 : 1) - x);
    uint16_t expect = (dl < dh || (dl == dh && (lo & 1) == 0)) ? lo : hi;
    ASSERT_EQ(f32_to_bf16(x), expect) << x;
  }
}

TEST(Fp16, All65536CodesRoundTrip) {
  for (uint32_t c = 0; c < 65536; ++c) {
    float v = f16_to_f32(uint16_t(c));
    uint16_t back = f32_to_f16(v);
    if (std::isnan(v)) EXPECT_EQ(back, uint16_t(c | 0x200)) << c;
    else ASSERT_EQ(back, c) << c;
  }
}

TEST(Fp16, RoundsToNearestEvenLikeBruteForce) {
  std::vector<std::pair<double, uint16_t>> positive;  // all finite non-negative fp16 values, sorted
  for (uint32_t c = 0; c < 0x7C00; ++c) positive.push_back({double(f16_to_f32(uint16_t(c))), uint16_t(c)});
  for (float x : interesting_floats(50000, 4)) {
    if (std::isnan(x)) continue;
    double a = std::fabs(double(x));
    uint16_t sign = std::signbit(x) ? 0x8000 : 0;
    uint16_t expect;
    if (a >= 65520.0) {
      expect = sign | 0x7C00;
    } else {
      auto it = std::lower_bound(positive.begin(), positive.end(), std::make_pair(a, uint16_t(0)));
      if (it == positive.end()) it = positive.end() - 1;
      auto best = *it;
      if (it != positive.begin()) {
        auto prev = *(it - 1);
        double dp = a - prev.first, db = std::fabs(best.first - a);
        if (dp < db || (dp == db && (prev.second & 1) == 0)) best = prev;
      }
      expect = sign | best.second;
    }
    ASSERT_EQ(f32_to_f16(x), expect) << x;
  }
}

TEST(BulkConversion, MatchesScalarBitForBit) {
  if (cpu_features().level < IsaLevel::Avx2) GTEST_SKIP() << "no AVX2 on this CPU";
  std::vector<float> in = interesting_floats(100003, 5);  // odd length exercises the tails
  size_t n = in.size();
  std::vector<uint16_t> h(n), h_ref(n);
  std::vector<uint8_t> b(n), b_ref(n);
  std::vector<float> f(n);

  avx2::convert_f32_to_bf16(in.data(), h.data(), n);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(h[i], f32_to_bf16(in[i])) << in[i];
  avx2::convert_f32_to_f16(in.data(), h.data(), n);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(h[i], f32_to_f16(in[i])) << in[i];
  avx2::convert_f32_to_fp8_e4m3(in.data(), b.data(), n);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(b[i], f32_to_fp8_e4m3(in[i])) << in[i];
  avx2::convert_f32_to_fp8_e5m2(in.data(), b.data(), n);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(b[i], f32_to_fp8_e5m2(in[i])) << in[i];

  std::vector<uint16_t> all16(65536);
  for (uint32_t i = 0; i < 65536; ++i) all16[i] = uint16_t(i);
  std::vector<float> out16(65536);
  avx2::convert_bf16_to_f32(all16.data(), out16.data(), 65536);
  for (uint32_t i = 0; i < 65536; ++i) ASSERT_TRUE(same_float_bits(out16[i], bf16_to_f32(uint16_t(i)))) << i;
  avx2::convert_f16_to_f32(all16.data(), out16.data(), 65536);
  for (uint32_t i = 0; i < 65536; ++i) ASSERT_TRUE(same_float_bits(out16[i], f16_to_f32(uint16_t(i)))) << i;

  for (size_t len : {size_t(256), size_t(255), size_t(7), size_t(1)}) {
    std::vector<uint8_t> codes(len);
    for (size_t i = 0; i < len; ++i) codes[i] = uint8_t(i * 37 + 11);
    std::vector<float> out(len);
    avx2::convert_fp8_e4m3_to_f32(codes.data(), out.data(), len);
    for (size_t i = 0; i < len; ++i) ASSERT_TRUE(same_float_bits(out[i], fp8_e4m3_to_f32(codes[i]))) << int(codes[i]);
    avx2::convert_fp8_e5m2_to_f32(codes.data(), out.data(), len);
    for (size_t i = 0; i < len; ++i) ASSERT_TRUE(same_float_bits(out[i], fp8_e5m2_to_f32(codes[i]))) << int(codes[i]);
  }
}

TEST(DType, NamesRoundTrip) {
  for (auto t : {DType::F64, DType::F32, DType::F16, DType::BF16, DType::F8_E4M3, DType::F8_E5M2, DType::I64,
                 DType::I32, DType::I16, DType::I8, DType::U8, DType::BOOL}) {
    auto back = dtype_from_name(dtype_name(t));
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(*back, t);
  }
  EXPECT_FALSE(dtype_from_name("F8_E4M3FNUZ").has_value());
  EXPECT_FALSE(dtype_from_name("f32").has_value());
  EXPECT_EQ(dtype_size_bytes(DType::BF16), 2u);
  EXPECT_EQ(dtype_size_bytes(DType::F8_E4M3), 1u);
}
