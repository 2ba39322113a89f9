// The BF16 dot-product orders of gemm.h (FP8 weights in W8A8 / W8A16, BF16 weights in W8A16, on CPUs with
// AVX512_BF16 and AVX512_VBMI): the kernels against their bitwise twin gemm_bf16_dot_ref on every path (GEMV,
// GEMM tiles, partial blocks and panels, grouped, gemm_fp8_act), the twin against the FP64 specification gemm_ref,
// and W8A16's accuracy. The twin runs on any CPU; the bitwise checks skip where the CPU has no BF16 dot product.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "fp8_test_util.h"
#include "kernels/gemm.h"
#include "kernels/gemm_kernels.h"

namespace deepmoe {
namespace {

using test::make_weight;
using test::OwnedWeight;
using test::random_normal;

std::string shape(GemmMode mode, int64_t m, int64_t n, int64_t k, DType dtype = DType::F8_E4M3) {
  return std::string(dtype_name(dtype)) + " " + gemm_mode_name(mode) + " " + std::to_string(m) + "x" +
         std::to_string(n) + "x" + std::to_string(k);
}

// The weight dtypes and modes that take the dot product.
constexpr std::pair<DType, GemmMode> kDotCases[] = {
    {DType::F8_E4M3, GemmMode::W8A8}, {DType::F8_E4M3, GemmMode::W8A16}, {DType::BF16, GemmMode::W8A16}};

void expect_bitwise(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &want[i], sizeof(float)) != 0) {
      ADD_FAILURE() << what << " differs at " << i << ": " << got[i] << " vs ref " << want[i];
      return;
    }
}

bool dot_available() { return gemm_uses_bf16_dot(GemmMode::W8A8, DType::F8_E4M3); }

TEST(GemmBf16Dot, Fp8WeightsInReducedModesAndBf16WeightsInW8A16UseIt) {
  EXPECT_FALSE(gemm_uses_bf16_dot(GemmMode::W8A32, DType::F8_E4M3));
  EXPECT_FALSE(gemm_uses_bf16_dot(GemmMode::W8A32, DType::BF16));
  EXPECT_FALSE(gemm_uses_bf16_dot(GemmMode::W8A8, DType::BF16));
  EXPECT_FALSE(gemm_uses_bf16_dot(GemmMode::W8A16, DType::F32));
  EXPECT_EQ(gemm_uses_bf16_dot(GemmMode::W8A16, DType::F8_E4M3), dot_available());
  EXPECT_EQ(gemm_uses_bf16_dot(GemmMode::W8A16, DType::BF16), dot_available());
  EXPECT_FALSE(gemm_detail::bf16_dot_at_level(IsaLevel::Avx2, GemmMode::W8A8, DType::F8_E4M3));
  EXPECT_FALSE(gemm_detail::bf16_dot_at_level(IsaLevel::Avx2, GemmMode::W8A16, DType::BF16));
}

TEST(GemmBf16Dot, ActivationRoundingIsNearestEvenWithTinyFlush) {
  EXPECT_EQ(activation_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(activation_to_bf16(-2.0f), 0xC000);
  EXPECT_EQ(activation_to_bf16(1.0f + 0x1p-8f), 0x3F80);          // tie → even
  EXPECT_EQ(activation_to_bf16(1.0f + 3 * 0x1p-8f), 0x3F82);      // tie → even (up)
  EXPECT_EQ(activation_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3F81);
  EXPECT_EQ(activation_to_bf16(0x1p-100f), 0x0D80);               // the smallest value kept
  EXPECT_EQ(activation_to_bf16(0x1.fep-101f), 0);
  EXPECT_EQ(activation_to_bf16(-1e-38f), 0);
}

// Every path of the kernels (GEMV at M ≤ 4, and its two passes at 5–8 for BF16 weights; the tile at M > 4 with 3-,
// 2-, 2+2- and 1-row groups; GEMV groups of 8, 4, 2 and 1 W rows), partial K blocks, partial panels and partial
// 16-row tiles, bit for bit against the twin.
// Run on both of the GEMM's tile kinds (vdpbf16ps, and the same order on FP32 FMAs; gemm_kernels.h).
class ForcedDotTiles {
 public:
  explicit ForcedDotTiles(gemm_detail::DotTiles tiles) { gemm_detail::set_dot_tiles(tiles); }
  ~ForcedDotTiles() { gemm_detail::set_dot_tiles(gemm_detail::DotTiles::Auto); }
};
constexpr gemm_detail::DotTiles kTileKinds[] = {gemm_detail::DotTiles::Bf16Dot, gemm_detail::DotTiles::Fma};
std::string tiles_name(gemm_detail::DotTiles tiles) {
  return tiles == gemm_detail::DotTiles::Fma ? " (FMA tiles)" : " (vdpbf16ps tiles)";
}

TEST(GemmBf16Dot, KernelsMatchTwinBitwise) {
  if (!dot_available()) GTEST_SKIP() << "no AVX512_BF16 + AVX512_VBMI on this CPU";
  ThreadPool pool(2);
  for (gemm_detail::DotTiles tiles : kTileKinds) {
    const ForcedDotTiles forced(tiles);
    int cases = 0;
    for (auto [dtype, mode] : kDotCases)
      for (int64_t m : {1, 2, 3, 4, 5, 6, 7, 8, 10, 65})
        for (int64_t n : {1, 37, 129})
          for (int64_t k : {32, 64, 200, 640, 1000}) {
            if (m * n * k > 3'000'000) continue;
            if (m > 4 && m < 8 && (n * k) % 3 != 0) continue;  // a subset of the middle row counts
            const auto a = random_normal(size_t(m * k), uint64_t(m * 3 + n * 5 + k), 1.0f);
            const OwnedWeight w = make_weight(dtype, random_normal(size_t(n * k), uint64_t(n + k), 0.05f), n, k);
            std::vector<float> c(size_t(m * n), std::nanf("")), ref(c.size());
            gemm(a.data(), m, w.view, c.data(), mode, &pool);
            gemm_bf16_dot_ref(a.data(), m, w.view, ref.data(), mode);
            expect_bitwise(c, ref, shape(mode, m, n, k, dtype) + tiles_name(tiles));
            ++cases;
          }
    EXPECT_GT(cases, 300);
    // Long K (the V3 q_a shape at decode, a short prefill, the lm_head's K) and adversarial tiles (huge, tiny, zero
    // blocks).
    for (auto [dtype, mode] : kDotCases)
      for (auto [m, n, k, adversarial] : {std::tuple<int64_t, int64_t, int64_t, bool>{1, 300, 7168, false},
                                         {9, 130, 7168, false}, {32, 70, 2048, false}, {100, 70, 2048, false},
                                         {130, 40, 640, false}, {17, 129, 640, true},
                                         {3, 300, 768, true}}) {
        auto a = random_normal(size_t(m * k), 11, 1.0f);
        auto wf = random_normal(size_t(n * k), 12, 0.05f);
        if (adversarial) {
          test::make_adversarial_tiles(a, m, k);
          test::make_adversarial_tiles(wf, n, k);
        }
        const OwnedWeight w = make_weight(dtype, wf, n, k);
        std::vector<float> c(size_t(m * n)), ref(c.size());
        gemm(a.data(), m, w.view, c.data(), mode, &pool);
        gemm_bf16_dot_ref(a.data(), m, w.view, ref.data(), mode);
        expect_bitwise(c, ref, shape(mode, m, n, k, dtype) + (adversarial ? " adversarial" : "") + tiles_name(tiles));
      }
  }
}

// Activations around the W8A16 flush threshold and FP32's normal range: the flush keeps DAZ/FTZ out of reach,
// so the kernels still equal the twin.
TEST(GemmBf16Dot, TinyActivationsMatchTwinBitwise) {
  if (!dot_available()) GTEST_SKIP() << "no AVX512_BF16 + AVX512_VBMI on this CPU";
  const int64_t m = 6, n = 40, k = 256;
  auto a = random_normal(size_t(m * k), 21, 1.0f);
  const float tiny[] = {0x1p-90f, 0x1p-100f, 0x1.8p-101f, 1e-38f, 1e-44f, 0.0f, -0.0f};
  for (size_t i = 0; i < a.size(); ++i) a[i] *= tiny[i % 7];
  for (DType dtype : {DType::F8_E4M3, DType::BF16}) {
    const OwnedWeight w = make_weight(dtype, random_normal(size_t(n * k), 22, 1e-3f), n, k);
    for (int64_t rows : {int64_t(1), m}) {
      std::vector<float> c(size_t(rows * n)), ref(c.size());
      gemm(a.data(), rows, w.view, c.data(), GemmMode::W8A16, nullptr);
      gemm_bf16_dot_ref(a.data(), rows, w.view, ref.data(), GemmMode::W8A16);
      expect_bitwise(c, ref, "tiny activations " + std::string(dtype_name(dtype)) + " M=" + std::to_string(rows));
    }
  }
}

// With unit rows of A every output is one weight: each e4m3 code's BF16 value through the byte tables, on the
// GEMV and the GEMM path. NaN codes read as ±480 as on every path.
TEST(GemmBf16Dot, EveryFp8CodeDecodesExactly) {
  if (!dot_available()) GTEST_SKIP() << "no AVX512_BF16 + AVX512_VBMI on this CPU";
  const int64_t n = 16, k = 256;
  std::vector<uint8_t> codes(size_t(n * k));
  for (int64_t j = 0; j < n; ++j)
    for (int64_t c = 0; c < k; ++c) codes[size_t(j * k + c)] = uint8_t((c + 37 * j) % 256);
  const std::vector<float> scale_inv(2, 1.0f);
  const WeightMatrix w{DType::F8_E4M3, n, k, codes.data(), scale_inv.data()};
  ThreadPool pool(2);
  for (int64_t m : {1, 3, 16, 256}) {
    std::vector<float> a(size_t(m * k), 0.0f), c(size_t(m * n));
    for (int64_t i = 0; i < m; ++i) a[size_t(i * k + (i * 59 + 3) % k)] = 1.0f;
    gemm(a.data(), m, w, c.data(), GemmMode::W8A16, &pool);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        const uint8_t code = codes[size_t(j * k + (i * 59 + 3) % k)];
        const float expect = (code & 0x7F) == 0x7F ? ((code & 0x80) ? -480.0f : 480.0f) : fp8_e4m3_to_f32(code);
        ASSERT_EQ(expect, c[size_t(i * n + j)]) << "M=" << m << " code 0x" << std::hex << int(code);
      }
  }
}

// Batch invariance: a row's bits do not depend on the batch it came in, the thread count or grouping.
TEST(GemmBf16Dot, RowsBitwiseIndependentOfBatchThreadsAndGrouping) {
  const int64_t n = 260, k = 640, m = 200;
  const auto a = random_normal(size_t(m * k), 31, 1.0f);
  ThreadPool one(1), two(2), three(3);
  for (gemm_detail::DotTiles tiles : kTileKinds)
    for (auto [dtype, mode] : kDotCases) {
      const ForcedDotTiles forced(tiles);
      const OwnedWeight w = make_weight(dtype, random_normal(size_t(n * k), 32, 0.05f), n, k);
      std::vector<float> full(size_t(m * n)), again(full.size());
      gemm(a.data(), m, w.view, full.data(), mode, &two);
      const std::string tag = std::string(dtype_name(dtype)) + " " + gemm_mode_name(mode) + tiles_name(tiles);
      for (auto [row0, rows] : {std::pair<int64_t, int64_t>{0, 1}, {199, 1}, {5, 2}, {10, 4}, {20, 5}, {30, 7},
                                {50, 8}, {40, 16}, {100, 65}}) {
        std::vector<float> part(size_t(rows * n));
        gemm(a.data() + row0 * k, rows, w.view, part.data(), mode, &one);
        ASSERT_EQ(0, std::memcmp(full.data() + row0 * n, part.data(), part.size() * sizeof(float)))
            << tag << " rows " << row0 << "+" << rows;
      }
      gemm(a.data(), m, w.view, again.data(), mode, &three);
      ASSERT_EQ(0, std::memcmp(full.data(), again.data(), full.size() * sizeof(float))) << tag;
      const std::vector<int64_t> offsets = {0, 1, 1, 4, 21, 121, 150, 200};
      const std::vector<WeightMatrix> views(offsets.size() - 1, w.view);
      grouped_gemm(a.data(), offsets.data(), int64_t(views.size()), views.data(), again.data(), mode, &two);
      ASSERT_EQ(0, std::memcmp(full.data(), again.data(), full.size() * sizeof(float))) << tag << " grouped";
    }
}

// The twin is the same product as the FP64 specification up to FP32 rounding (the tolerance of gemm_test.cpp).
TEST(GemmBf16Dot, TwinMatchesFp64Specification) {
  for (auto [dtype, mode] : kDotCases)
    for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{3, 70, 1000}, {17, 129, 640}, {1, 40, 7168}}) {
      const auto a = random_normal(size_t(m * k), 41, 1.0f);
      const auto wf = random_normal(size_t(n * k), 42, 0.05f);
      const OwnedWeight w = make_weight(dtype, wf, n, k);
      const OwnedWeight w_abs = test::abs_weight(w);
      std::vector<float> a_abs(a.size());
      for (size_t i = 0; i < a.size(); ++i) a_abs[i] = std::fabs(a[i]);
      std::vector<float> twin(size_t(m * n)), ref(twin.size()), bound(twin.size());
      gemm_bf16_dot_ref(a.data(), m, w.view, twin.data(), mode);
      gemm_ref(a.data(), m, w.view, ref.data(), mode);
      gemm_ref(a_abs.data(), m, w_abs.view, bound.data(), mode);
      for (size_t i = 0; i < twin.size(); ++i)
        ASSERT_LE(std::fabs(twin[i] - ref[i]), 1e-5f * bound[i]) << shape(mode, m, n, k, dtype) << " at " << i;
    }
}

// DeepGEMM's calc_diff against the FP64 product of the unquantized inputs: W8A16 sits between W8A8 and W8A32.
TEST(GemmBf16Dot, W8A16IsCloserToExactThanW8A8) {
  const int64_t m = 32, n = 256, k = 2048;
  const auto a = random_normal(size_t(m * k), 51, 1.0f);
  const auto wf = random_normal(size_t(n * k), 52, 0.02f);
  std::vector<double> exact(size_t(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t c = 0; c < k; ++c) s += double(a[size_t(i * k + c)]) * wf[size_t(j * k + c)];
      exact[size_t(i * n + j)] = s;
    }
  const OwnedWeight w = make_weight(DType::F8_E4M3, wf, n, k);
  ThreadPool pool(2);
  double diff[3];
  int idx = 0;
  for (GemmMode mode : {GemmMode::W8A8, GemmMode::W8A16, GemmMode::W8A32}) {
    std::vector<float> c(size_t(m * n));
    gemm(a.data(), m, w.view, c.data(), mode, &pool);
    diff[idx++] = test::calc_diff(c, exact);
  }
  EXPECT_LT(diff[1], 1e-3);
  EXPECT_LT(diff[1], diff[0]) << "w8a16 " << diff[1] << " vs w8a8 " << diff[0];
  EXPECT_GT(diff[1], diff[2]) << "w8a16 " << diff[1] << " vs w8a32 " << diff[2];
}

TEST(GemmBf16Dot, TwinRejectsOtherWeightsAndModes) {
  std::vector<float> a(128), c(1);
  const OwnedWeight bf16 = make_weight(DType::BF16, a, 1, 128);
  EXPECT_THROW(gemm_bf16_dot_ref(a.data(), 1, bf16.view, c.data(), GemmMode::W8A8), Error);
  EXPECT_THROW(gemm_bf16_dot_ref(a.data(), 1, bf16.view, c.data(), GemmMode::W8A32), Error);
  const OwnedWeight f32 = make_weight(DType::F32, a, 1, 128);
  EXPECT_THROW(gemm_bf16_dot_ref(a.data(), 1, f32.view, c.data(), GemmMode::W8A16), Error);
  const OwnedWeight fp8 = make_weight(DType::F8_E4M3, a, 1, 128);
  EXPECT_THROW(gemm_bf16_dot_ref(a.data(), 1, fp8.view, c.data(), GemmMode::W8A32), Error);
}

}  // namespace
}  // namespace deepmoe
