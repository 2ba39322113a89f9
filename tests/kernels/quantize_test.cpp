#include "kernels/quantize.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/dtype.h"
#include "core/thread_pool.h"
#include "fp8_test_util.h"

namespace deepmoe {
namespace {

using test::random_normal;

TEST(Fp8TileScale, FormulaAndFloor) {
  EXPECT_EQ(fp8_tile_scale(448.0f, false), 1.0f);
  EXPECT_EQ(fp8_tile_scale(0.0f, false), 1e-4f / 448.0f);  // amax floor of act_quant
  EXPECT_EQ(fp8_tile_scale(3.0f, false), 3.0f / 448.0f);
}

TEST(Fp8TileScale, Ue8m0IsNextPowerOfTwo) {
  for (float amax : {448.0f, 1.0f, 3.0f, 1e-4f, 0.0f, 12345.678f, 896.0f, 449.0f}) {
    const float s = fp8_tile_scale(amax, false), p = fp8_tile_scale(amax, true);
    int e;
    EXPECT_EQ(std::frexp(p, &e), 0.5f) << amax;  // a power of two
    const double want = std::ldexp(1.0, int(std::ceil(std::log2(double(s)))));
    EXPECT_EQ(double(p), want) << amax;
    EXPECT_GE(p, s);
  }
}

struct Shape {
  int64_t m, k;
};

class QuantizeAct : public ::testing::TestWithParam<Shape> {};

TEST_P(QuantizeAct, FastMatchesRefBitwise1x128) {
  const auto [m, k] = GetParam();
  auto x = random_normal(size_t(m * k), 11 + m * 7 + k, 3.0f);
  test::make_adversarial_tiles(x, m, k);
  ThreadPool pool(2);
  for (bool ue8m0 : {false, true}) {
    const size_t ns = size_t(m * quant_blocks(k));
    std::vector<uint8_t> q(size_t(m * k)), q_ref(size_t(m * k));
    std::vector<float> s(ns), s_ref(ns);
    quantize_act_1x128(x.data(), m, k, q.data(), s.data(), ue8m0, &pool);
    quantize_act_1x128_ref(x.data(), m, k, q_ref.data(), s_ref.data(), ue8m0);
    EXPECT_EQ(q, q_ref);
    EXPECT_EQ(0, std::memcmp(s.data(), s_ref.data(), ns * sizeof(float)));
  }
}

TEST_P(QuantizeAct, FastMatchesRefBitwise128x1) {
  const auto [m, k] = GetParam();
  auto x = random_normal(size_t(m * k), 5 + m + k, 0.5f);
  test::make_adversarial_tiles(x, m, k);
  ThreadPool pool(2);
  for (bool ue8m0 : {false, true}) {
    const size_t ns = size_t(quant_blocks(m) * k);
    std::vector<uint8_t> q(size_t(m * k)), q_ref(size_t(m * k));
    std::vector<float> s(ns), s_ref(ns);
    quantize_act_128x1(x.data(), m, k, q.data(), s.data(), ue8m0, &pool);
    quantize_act_128x1_ref(x.data(), m, k, q_ref.data(), s_ref.data(), ue8m0);
    EXPECT_EQ(q, q_ref);
    EXPECT_EQ(0, std::memcmp(s.data(), s_ref.data(), ns * sizeof(float)));
  }
}

// e4m3 has 3 mantissa bits: round-to-nearest is within 2^-4 relative for normals, and within half the smallest
// subnormal step (2^-10 · s) near zero. The tile's amax maps to 448 exactly up to the division's rounding.
TEST_P(QuantizeAct, DequantizedWithinE4m3Rounding) {
  const auto [m, k] = GetParam();
  const auto x = random_normal(size_t(m * k), 99 + k, 2.0f);
  std::vector<uint8_t> q(size_t(m * k));
  std::vector<float> s(size_t(m * quant_blocks(k))), y(size_t(m * k));
  quantize_act_1x128(x.data(), m, k, q.data(), s.data(), false);
  dequantize_act_1x128(q.data(), s.data(), m, k, y.data());
  for (int64_t i = 0; i < m; ++i)
    for (int64_t c = 0; c < k; ++c) {
      const float sc = s[size_t(i * quant_blocks(k) + c / 128)], xv = x[size_t(i * k + c)];
      EXPECT_LE(std::fabs(y[size_t(i * k + c)] - xv), std::fabs(xv) * 0.0625f + sc * 0.0009765625f * 1.0001f)
          << i << "," << c;
    }
}

INSTANTIATE_TEST_SUITE_P(Shapes, QuantizeAct,
                         ::testing::Values(Shape{1, 128}, Shape{3, 256}, Shape{17, 100}, Shape{130, 300},
                                           Shape{257, 129}, Shape{64, 7168}));

TEST(QuantizeAct, ZeroTileUsesFloorScale) {
  std::vector<float> x(256, 0.0f);
  for (int c = 128; c < 256; ++c) x[size_t(c)] = float(c - 128) * 0.5f;
  std::vector<uint8_t> q(256);
  std::vector<float> s(2);
  quantize_act_1x128(x.data(), 1, 256, q.data(), s.data(), false);
  EXPECT_EQ(s[0], 1e-4f / 448.0f);
  for (int c = 0; c < 128; ++c) EXPECT_EQ(q[size_t(c)], 0);
  EXPECT_EQ(s[1], 63.5f / 448.0f);
  EXPECT_EQ(q[255], 0x7E);  // the tile's amax becomes 448, the largest finite e4m3
}

TEST(Requantize, TilingConversionsMatchQuantizingTheDequantizedValues) {
  const int64_t m = 200, k = 384;
  const auto x = random_normal(size_t(m * k), 3, 1.0f);
  std::vector<uint8_t> q1(size_t(m * k)), q2(size_t(m * k)), q_want(size_t(m * k));
  std::vector<float> s1(size_t(m * 3)), s2(size_t(2 * k)), s_want(size_t(2 * k)), deq(size_t(m * k));
  quantize_act_1x128(x.data(), m, k, q1.data(), s1.data(), true);
  requantize_1x128_to_128x1(q1.data(), s1.data(), m, k, q2.data(), s2.data(), true);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t c = 0; c < k; ++c)
      deq[size_t(i * k + c)] = fp8_e4m3_to_f32(q1[size_t(i * k + c)]) * s1[size_t(i * 3 + c / 128)];
  quantize_act_128x1_ref(deq.data(), m, k, q_want.data(), s_want.data(), true);
  EXPECT_EQ(q2, q_want);
  EXPECT_EQ(s2, s_want);

  // And back: 128x1 → 1x128 equals quantizing the 128x1-dequantized values per token.
  std::vector<uint8_t> q3(size_t(m * k)), q3_want(size_t(m * k));
  std::vector<float> s3(size_t(m * 3)), s3_want(size_t(m * 3));
  requantize_128x1_to_1x128(q2.data(), s2.data(), m, k, q3.data(), s3.data(), false);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t c = 0; c < k; ++c)
      deq[size_t(i * k + c)] = fp8_e4m3_to_f32(q2[size_t(i * k + c)]) * s2[size_t((i / 128) * k + c)];
  quantize_act_1x128_ref(deq.data(), m, k, q3_want.data(), s3_want.data(), false);
  EXPECT_EQ(q3, q3_want);
  EXPECT_EQ(s3, s3_want);
}

TEST(QuantizeWeight, FastMatchesRefAndKeepsCheckpointLayout) {
  for (auto [n, k] : {std::pair<int64_t, int64_t>{129, 300}, {256, 128}, {1, 7}, {300, 1024}}) {
    auto w = random_normal(size_t(n * k), uint64_t(n * 1000 + k), 0.02f);
    test::make_adversarial_tiles(w, n, k);
    const size_t ns = size_t(quant_blocks(n) * quant_blocks(k));
    std::vector<uint8_t> q(size_t(n * k)), q_ref(size_t(n * k));
    std::vector<float> s(ns), s_ref(ns), deq(size_t(n * k));
    ThreadPool pool(2);
    quantize_weight_128x128(w.data(), n, k, q.data(), s.data(), &pool);
    quantize_weight_128x128_ref(w.data(), n, k, q_ref.data(), s_ref.data());
    EXPECT_EQ(q, q_ref);
    EXPECT_EQ(s, s_ref);
    // scale_inv is a multiplier: block (nb, kb) dequantizes as q · scale_inv[nb, kb].
    dequantize_weight_128x128(q.data(), s.data(), n, k, deq.data());
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < k; ++c) {
        const float sc = s[size_t((r / 128) * quant_blocks(k) + c / 128)];
        EXPECT_EQ(deq[size_t(r * k + c)], fp8_e4m3_to_f32(q[size_t(r * k + c)]) * sc);
        EXPECT_LE(std::fabs(deq[size_t(r * k + c)] - w[size_t(r * k + c)]),
                  std::fabs(w[size_t(r * k + c)]) * 0.0625f + sc * 0.0009765625f * 1.0001f);
      }
  }
}

TEST(QuantizeWeight, EdgeBlockAmaxIgnoresPadding) {
  // n = 130: the second block row has 2 real rows; its scale must come from them alone.
  const int64_t n = 130, k = 128;
  std::vector<float> w(size_t(n * k), 1.0f);
  w[size_t(129 * k + 5)] = -7.0f;
  std::vector<uint8_t> q(size_t(n * k));
  std::vector<float> s(2);
  quantize_weight_128x128(w.data(), n, k, q.data(), s.data());
  EXPECT_EQ(s[0], 1.0f / 448.0f);
  EXPECT_EQ(s[1], 7.0f / 448.0f);
  EXPECT_EQ(q[size_t(129 * k + 5)], 0xFE);  // -448
}

TEST(Fp8NanScan, FindsNanCodes) {
  std::vector<uint8_t> q = {0x00, 0x7E, 0xFE, 0x01};
  EXPECT_FALSE(fp8_e4m3_has_nan(q.data(), int64_t(q.size())));
  q[2] = 0xFF;
  EXPECT_TRUE(fp8_e4m3_has_nan(q.data(), int64_t(q.size())));
}

}  // namespace
}  // namespace deepmoe
