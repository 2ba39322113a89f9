// rmsnorm, softmax, swiglu and topk against their _ref twins (FP64 specifications) and hand-computed values.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/thread_pool.h"
#include "kernels/exp_f32.h"
#include "kernels/rmsnorm.h"
#include "kernels/softmax.h"
#include "kernels/swiglu.h"
#include "kernels/topk.h"
#include "test_util.h"

namespace deepmoe {
namespace {

using testing_util::max_rel_diff;
using testing_util::random_vector;

TEST(RmsNorm, MatchesRefOverAwkwardShapes) {
  ThreadPool pool(2);
  for (int64_t dim : {1, 7, 8, 129, 512}) {
    for (int64_t rows : {1, 3, 17}) {
      const int64_t stride = dim + 5;
      auto x = random_vector(size_t(rows * stride), uint32_t(dim * 31 + rows), -3, 3);
      auto w = random_vector(size_t(dim), 7, 0.5f, 1.5f);
      std::vector<float> y(x.size(), 0), yr(x.size(), 0);
      rmsnorm(x.data(), stride, w.data(), rows, dim, 1e-6f, y.data(), stride, &pool);
      rmsnorm_ref(x.data(), stride, w.data(), rows, dim, 1e-6f, yr.data(), stride);
      EXPECT_LT(max_rel_diff(y, yr), 2e-6) << dim << "x" << rows;
    }
  }
}

TEST(RmsNorm, HandValueAndInPlace) {
  std::vector<float> x = {3, 4}, w = {1, 2};
  rmsnorm(x.data(), 2, w.data(), 1, 2, 0.0f, x.data(), 2);
  // rms = sqrt((9 + 16) / 2) = 3.5355339
  EXPECT_NEAR(x[0], 3 / 3.5355339, 1e-6);
  EXPECT_NEAR(x[1], 2 * 4 / 3.5355339, 1e-6);
}

TEST(RmsNorm, RowsDoNotDependOnBatchOrThreads) {
  const int64_t dim = 300, rows = 9;
  auto x = random_vector(size_t(rows * dim), 3);
  auto w = random_vector(size_t(dim), 4);
  std::vector<float> all(x.size()), one(static_cast<size_t>(dim));
  ThreadPool pool(2);
  rmsnorm(x.data(), dim, w.data(), rows, dim, 1e-6f, all.data(), dim, &pool);
  for (int64_t r = 0; r < rows; ++r) {
    rmsnorm(x.data() + r * dim, dim, w.data(), 1, dim, 1e-6f, one.data(), dim, nullptr);
    for (int64_t i = 0; i < dim; ++i) ASSERT_EQ(one[size_t(i)], all[size_t(r * dim + i)]);
  }
}

TEST(Softmax, MatchesRefAndSumsToOne) {
  for (int64_t n : {1, 2, 9, 256, 1000}) {
    auto x = random_vector(size_t(3 * n), uint32_t(n), -20, 20);
    auto xr = x;
    softmax_rows(x.data(), 3, n, n);
    softmax_rows_ref(xr.data(), 3, n, n);
    EXPECT_LT(max_rel_diff(x, xr), 2e-6);
    for (int r = 0; r < 3; ++r) {
      double s = 0;
      for (int64_t i = 0; i < n; ++i) s += x[size_t(r * n + i)];
      EXPECT_NEAR(s, 1.0, 1e-5);
    }
  }
}

TEST(Softmax, LargeValuesAndMinusInfinity) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> x = {1000, 1000, -inf, 999};
  softmax_rows(x.data(), 1, 4, 4);
  double e = std::exp(-1.0), z = 2 + e;
  EXPECT_NEAR(x[0], 1 / z, 1e-6);
  EXPECT_NEAR(x[1], 1 / z, 1e-6);
  EXPECT_EQ(x[2], 0.0f);
  EXPECT_NEAR(x[3], e / z, 1e-6);
  std::vector<float> all_masked = {-inf, -inf};
  softmax_rows(all_masked.data(), 1, 2, 2);
  EXPECT_EQ(all_masked[0], 0.0f);
  EXPECT_EQ(all_masked[1], 0.0f);
}

// exp_f32 (the attention softmax's e^x) against e^x in FP64 rounded to FP32: within one unit in the last place over
// [-110, 90] (the polynomial's range and the std::exp fallback on both sides), exactly 1 at 0, and the limits.
TEST(ExpF32, WithinOneUlpOfFp64AndTheLimits) {
  int64_t checked = 0;
  for (float x = -110.0f; x < 90.0f; x += 0.0007f) {
    const float got = exp_f32(x), want = float(std::exp(double(x)));
    if (std::isinf(want)) {
      ASSERT_EQ(got, want) << "x = " << x;
    } else {
      const float ulp = std::nextafter(want, std::numeric_limits<float>::infinity()) - want;
      ASSERT_LE(std::fabs(got - want), ulp) << "x = " << x;
    }
    ++checked;
  }
  EXPECT_GT(checked, 250000);
  EXPECT_EQ(exp_f32(0.0f), 1.0f);
  EXPECT_EQ(exp_f32(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_EQ(exp_f32(std::numeric_limits<float>::infinity()), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(exp_f32(std::numeric_limits<float>::quiet_NaN())));
}

TEST(SwiGlu, MatchesRefAndHandValue) {
  auto g = random_vector(1001, 1, -10, 10), u = random_vector(1001, 2, -2, 2);
  std::vector<float> y(g.size()), yr(g.size());
  swiglu(g.data(), u.data(), int64_t(g.size()), y.data());
  swiglu_ref(g.data(), u.data(), int64_t(g.size()), yr.data());
  EXPECT_LT(max_rel_diff(y, yr), 1e-6);
  float g1 = 1.0f, u1 = 2.0f, y1 = 0;
  swiglu(&g1, &u1, 1, &y1);
  EXPECT_NEAR(y1, 2.0 / (1 + std::exp(-1.0)), 1e-6);
}

TEST(TopK, MatchesRefIncludingTiesAndNaN) {
  for (int n : {1, 5, 64, 256}) {
    for (int k : {1, 2, std::min(n, 8), n}) {
      if (k > n) continue;
      auto x = random_vector(size_t(n), uint32_t(n * 100 + k));
      // Quantize to force ties.
      for (auto& v : x) v = std::round(v * 4) / 4;
      if (n > 3) x[3] = std::numeric_limits<float>::quiet_NaN();
      std::vector<int> i1(static_cast<size_t>(k)), i2(static_cast<size_t>(k));
      std::vector<float> v1(static_cast<size_t>(k)), v2(static_cast<size_t>(k));
      topk(x.data(), n, k, i1.data(), v1.data());
      topk_ref(x.data(), n, k, i2.data(), v2.data());
      EXPECT_EQ(i1, i2) << n << " " << k;
    }
  }
}

TEST(TopK, HandExample) {
  std::vector<float> x = {0.1f, 0.9f, 0.5f, 0.9f, -1.0f};
  int idx[3];
  float val[3];
  topk(x.data(), 5, 3, idx, val);
  EXPECT_EQ(idx[0], 1);  // tie 0.9: lower index first
  EXPECT_EQ(idx[1], 3);
  EXPECT_EQ(idx[2], 2);
  EXPECT_EQ(val[2], 0.5f);
}

}  // namespace
}  // namespace deepmoe
