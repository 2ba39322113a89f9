// RoPE/YaRN: the frequency table against values worked out by hand from model.py's precompute_freqs_cis for the
// V3 config (reference §1.4), the softmax scale 0.1352338, rotation against the FP64 ref, and the relative-
// position property of interleaved-pair rotation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "kernels/rope.h"
#include "test_util.h"

namespace deepmoe {
namespace {

RopeParams v3_params() {
  RopeParams p;
  p.rope_dim = 64;
  p.theta = 10000;
  p.yarn = true;
  p.factor = 40;
  p.beta_fast = 32;
  p.beta_slow = 1;
  p.mscale = 1.0;
  p.mscale_all_dim = 1.0;
  p.original_max_position = 4096;
  return p;
}

TEST(Rope, YarnFrequenciesOfV3) {
  RopeParams p = v3_params();
  auto f = rope_frequencies(p);
  ASSERT_EQ(f.size(), 32u);
  // low = floor(10.47) = 10, high = ceil(22.51) = 23: i <= 10 unchanged, i >= 23 divided by 40, linear between.
  for (int i = 0; i < 32; ++i) {
    double base = 1.0 / std::pow(10000.0, 2.0 * i / 64.0);
    double ramp = std::clamp((i - 10.0) / 13.0, 0.0, 1.0);
    double expect = base / 40 * ramp + base * (1 - ramp);
    EXPECT_NEAR(f[size_t(i)], expect, 2e-7 * base) << i;
  }
  EXPECT_NEAR(f[10], 1.0 / std::pow(10000.0, 20.0 / 64.0), 1e-7);
  EXPECT_NEAR(f[23], 1.0 / std::pow(10000.0, 46.0 / 64.0) / 40, 1e-9);
}

TEST(Rope, SoftmaxScaleOfV3) {
  EXPECT_NEAR(attention_softmax_scale(v3_params(), 192), 0.1352338, 1e-7);
  RopeParams plain;
  EXPECT_NEAR(attention_softmax_scale(plain, 192), 1 / std::sqrt(192.0), 1e-12);
  EXPECT_EQ(rope_amplitude(v3_params()), 1.0f);
}

TEST(Rope, PlainFrequenciesWithoutYarn) {
  RopeParams p;
  p.rope_dim = 8;
  auto f = rope_frequencies(p);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(f[size_t(i)], std::pow(10000.0, -2.0 * i / 8), 1e-7);
}

TEST(Rope, InterleavedPairsHandExample) {
  RopeParams p;
  p.rope_dim = 4;
  auto f = rope_frequencies(p);  // {1, 0.01}
  std::vector<float> x = {1, 0, 0, 1};
  int64_t pos = 3;
  apply_rope(x.data(), 1, 4, 1, &pos, f, 1.0f);
  // Pair 0 = (1, 0) rotated by 3 rad; pair 1 = (0, 1) rotated by 0.03 rad.
  EXPECT_NEAR(x[0], std::cos(3.0), 1e-6);
  EXPECT_NEAR(x[1], std::sin(3.0), 1e-6);
  EXPECT_NEAR(x[2], -std::sin(0.03), 1e-6);
  EXPECT_NEAR(x[3], std::cos(0.03), 1e-6);
}

TEST(Rope, MatchesRefAtLargePositions) {
  RopeParams p = v3_params();
  auto f = rope_frequencies(p);
  const int64_t rows = 6, heads = 3, stride = 70;
  auto x = testing_util::random_vector(size_t(rows * heads * stride), 5);
  auto xr = x;
  std::vector<int64_t> pos = {0, 1, 4095, 4096, 100000, 163839};
  apply_rope(x.data(), rows * heads, stride, heads, pos.data(), f, 1.0f);
  apply_rope_ref(xr.data(), rows * heads, stride, heads, pos.data(), f, 1.0f);
  EXPECT_LT(testing_util::max_rel_diff(x, xr), 1e-6);
}

TEST(Rope, DotProductDependsOnlyOnRelativePosition) {
  RopeParams p = v3_params();
  auto f = rope_frequencies(p);
  auto q = testing_util::random_vector(64, 1), k = testing_util::random_vector(64, 2);
  auto score = [&](int64_t m, int64_t n) {
    auto a = q, b = k;
    apply_rope_ref(a.data(), 1, 64, 1, &m, f, 1.0f);
    apply_rope_ref(b.data(), 1, 64, 1, &n, f, 1.0f);
    double s = 0;
    for (int i = 0; i < 64; ++i) s += double(a[size_t(i)]) * b[size_t(i)];
    return s;
  };
  EXPECT_NEAR(score(10, 3), score(107, 100), 1e-5);
  EXPECT_NEAR(score(5, 5), score(0, 0), 1e-5);
}

}  // namespace
}  // namespace deepmoe
