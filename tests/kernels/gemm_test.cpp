// The block-scaled GEMM against its FP64 specification (gemm_ref) on every ISA level this CPU has, against an
// FP64 product of the unquantized inputs (DeepGEMM's calc_diff), and its batch invariance.
#include "kernels/gemm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "fp8_test_util.h"
#include "kernels/gemm_kernels.h"

namespace deepmoe {
namespace {

using gemm_detail::gemm_at_level;
using gemm_detail::grouped_gemm_at_level;
using test::make_weight;
using test::OwnedWeight;
using test::random_normal;

std::vector<IsaLevel> levels() {
  std::vector<IsaLevel> out = {IsaLevel::Scalar};
  if (gemm_detail::hardware_isa_level() >= IsaLevel::Avx2) out.push_back(IsaLevel::Avx2);
  if (gemm_detail::hardware_isa_level() >= IsaLevel::Avx512) out.push_back(IsaLevel::Avx512);
  return out;
}

const char* mode_name(GemmMode mode) { return gemm_mode_name(mode); }

struct Case {
  DType dtype;
  GemmMode mode;
  int64_t m, n, k;
  bool adversarial;
};

std::string describe(const Case& c, IsaLevel level) {
  return std::string(dtype_name(c.dtype)) + " " + mode_name(c.mode) + " M=" + std::to_string(c.m) +
         " N=" + std::to_string(c.n) + " K=" + std::to_string(c.k) + (c.adversarial ? " adversarial" : "") +
         " isa=" + isa_level_name(level);
}

// |C − C_ref| ≤ 1e-5 · (|A|·|W|)_ref elementwise: relative error 1e-5 on the exactly dequantized operands,
// measured against the magnitude of the terms (a plain relative error is meaningless where terms cancel).
void check_against_ref(const Case& cs, ThreadPool* pool, bool with_scalar = true) {
  auto a = random_normal(size_t(cs.m * cs.k), uint64_t(cs.m * 31 + cs.n * 7 + cs.k), 1.0f);
  auto wf = random_normal(size_t(cs.n * cs.k), uint64_t(cs.n * 13 + cs.k), 0.05f);
  if (cs.adversarial) {
    test::make_adversarial_tiles(a, cs.m, cs.k);
    test::make_adversarial_tiles(wf, cs.n, cs.k);
  }
  const OwnedWeight w = make_weight(cs.dtype, wf, cs.n, cs.k);
  const OwnedWeight w_abs = test::abs_weight(w);
  std::vector<float> a_abs(a.size());
  for (size_t i = 0; i < a.size(); ++i) a_abs[i] = std::fabs(a[i]);
  std::vector<float> ref(size_t(cs.m * cs.n)), bound(ref.size());
  gemm_ref(a.data(), cs.m, w.view, ref.data(), cs.mode);
  gemm_ref(a_abs.data(), cs.m, w_abs.view, bound.data(), cs.mode);
  for (IsaLevel level : levels()) {
    if (level == IsaLevel::Scalar && !with_scalar && levels().size() > 1) continue;
    std::vector<float> c(ref.size(), std::nanf(""));
    gemm_at_level(level, a.data(), cs.m, w.view, c.data(), cs.mode, pool);
    int bad = 0;
    for (size_t i = 0; i < c.size() && bad < 5; ++i) {
      const float tol = 1e-5f * bound[i];
      if (!(std::fabs(c[i] - ref[i]) <= tol)) {
        ++bad;
        ADD_FAILURE() << describe(cs, level) << " at [" << i / size_t(cs.n) << "," << i % size_t(cs.n)
                      << "]: " << c[i] << " vs ref " << ref[i] << " (tolerance " << tol << ")";
      }
    }
  }
}

// The grid, one test per weight dtype and mode so ctest can run them side by side. The scalar path and the
// FP64 reference cost M·N·K each, so the largest products run on the vector paths only (scalar keeps ≤ 1.5M).
class GemmGrid : public ::testing::TestWithParam<std::pair<DType, GemmMode>> {};

TEST_P(GemmGrid, MatchesRefOverShapeGrid) {
  const auto [dtype, mode] = GetParam();
  ThreadPool pool(2);
  int cases = 0;
  for (int64_t m : {1, 3, 17, 64, 300})
    for (int64_t n : {1, 100, 128, 129, 2112})
      for (int64_t k : {128, 384, 7168}) {
        // the decode shape of V3's fused q_a/kv_a projection stays in whatever the cap
        const bool gemv_v3 = m == 1 && n == 2112 && k == 7168;
        if (m * n * k > 4'000'000 && !gemv_v3) continue;
        if (dtype != DType::F8_E4M3 && (m * n * k) % 3 != 0 && !gemv_v3) continue;  // a subset for plain dtypes
        check_against_ref({dtype, mode, m, n, k, false}, &pool, m * n * k <= 1'500'000);
        ++cases;
      }
  EXPECT_GT(cases, 15);
}

INSTANTIATE_TEST_SUITE_P(Weights, GemmGrid,
                         ::testing::Values(std::pair{DType::F8_E4M3, GemmMode::W8A32},
                                           std::pair{DType::F8_E4M3, GemmMode::W8A8},
                                           std::pair{DType::F8_E4M3, GemmMode::W8A16},
                                           std::pair{DType::BF16, GemmMode::W8A32},
                                           std::pair{DType::BF16, GemmMode::W8A16},
                                           std::pair{DType::F32, GemmMode::W8A32}));

TEST(Gemm, MatchesRefOnAdversarialTiles) {
  ThreadPool pool(2);
  for (auto mode : {GemmMode::W8A32, GemmMode::W8A8})
    for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{17, 129, 640}, {64, 300, 1024}, {3, 2112, 768}})
      check_against_ref({DType::F8_E4M3, mode, m, n, k, true}, &pool);
}

TEST(Gemm, PlainDtypesTakeAnyK) {
  ThreadPool pool(2);
  for (DType dtype : {DType::F32, DType::BF16})
    for (int64_t k : {1, 7, 100, 200, 1000})
      for (int64_t m : {1, 5, 66}) {
        check_against_ref({dtype, GemmMode::W8A32, m, 45, k, false}, &pool);
        if (dtype == DType::BF16) check_against_ref({dtype, GemmMode::W8A16, m, 45, k, false}, &pool);
      }
  // FP8 with a partial last K block (tiny generated models): scales still per 128-block.
  for (int64_t k : {64, 200}) check_against_ref({DType::F8_E4M3, GemmMode::W8A8, 9, 140, k, false}, &pool);
}

// Decode-shaped calls with short rows: GEMV tasks span several panels (kGemvTaskBytes), and the last task ends in
// a partial panel (N = 1000 is 62.5 panels).
TEST(Gemm, GemvTasksOfSeveralPanelsEndInPartialPanel) {
  ThreadPool pool(2);
  for (DType dtype : {DType::F8_E4M3, DType::BF16})
    for (int64_t m : {1, 2, 4, 7}) check_against_ref({dtype, GemmMode::W8A32, m, 1000, 256, false}, &pool);
}

TEST(Gemm, Fp8CloseToFp64ProductOfUnquantizedInputs) {
  // DeepGEMM tests/test_core.py: quantize, multiply, compare with the high-precision product; calc_diff < 1e-3.
  ThreadPool pool(2);
  for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{32, 256, 7168}, {200, 129, 1536}, {1, 2112, 7168}})
    for (auto mode : {GemmMode::W8A32, GemmMode::W8A8}) {
      const auto a = random_normal(size_t(m * k), 1 + uint64_t(m), 1.0f);
      const auto wf = random_normal(size_t(n * k), 2 + uint64_t(n), 0.02f);
      std::vector<double> exact(size_t(m * n));
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
          double s = 0;
          for (int64_t c = 0; c < k; ++c) s += double(a[size_t(i * k + c)]) * wf[size_t(j * k + c)];
          exact[size_t(i * n + j)] = s;
        }
      const OwnedWeight w = make_weight(DType::F8_E4M3, wf, n, k);
      std::vector<float> c(size_t(m * n));
      gemm(a.data(), m, w.view, c.data(), mode, &pool);
      EXPECT_LT(test::calc_diff(c, exact), 1e-3) << mode_name(mode) << " " << m << "x" << n << "x" << k;
    }
}

TEST(Gemm, Fp8ActivationEntryMatchesW8A8) {
  const int64_t m = 19, n = 150, k = 512;
  const auto a = random_normal(size_t(m * k), 8, 1.0f);
  const OwnedWeight w = make_weight(DType::F8_E4M3, random_normal(size_t(n * k), 9, 0.1f), n, k);
  std::vector<uint8_t> q(size_t(m * k));
  std::vector<float> s(size_t(m * 4)), c1(size_t(m * n)), c2(size_t(m * n));
  quantize_act_1x128(a.data(), m, k, q.data(), s.data(), false);
  gemm_fp8_act(q.data(), s.data(), m, w.view, c1.data(), nullptr);
  gemm(a.data(), m, w.view, c2.data(), GemmMode::W8A8, nullptr);
  EXPECT_EQ(0, std::memcmp(c1.data(), c2.data(), c1.size() * sizeof(float)));
}

TEST(Gemm, GroupedMatchesRefWithEmptyExperts) {
  const int64_t n = 129, k = 384;
  const std::vector<int64_t> offsets = {0, 5, 5, 22, 22, 90, 91};  // experts 1 and 3 get no rows
  const int64_t groups = int64_t(offsets.size()) - 1, m = offsets.back();
  std::vector<OwnedWeight> owned;
  std::vector<WeightMatrix> views;
  for (int64_t g = 0; g < groups; ++g)
    owned.push_back(make_weight(DType::F8_E4M3, random_normal(size_t(n * k), 40 + uint64_t(g), 0.05f), n, k));
  for (auto& o : owned) views.push_back(o.view);
  const auto a = random_normal(size_t(m * k), 77, 1.0f);
  ThreadPool pool(2);
  for (auto mode : {GemmMode::W8A32, GemmMode::W8A8}) {
    std::vector<float> ref(size_t(m * n)), c(size_t(m * n));
    grouped_gemm_ref(a.data(), offsets.data(), groups, views.data(), ref.data(), mode);
    for (IsaLevel level : levels()) {
      grouped_gemm_at_level(level, a.data(), offsets.data(), groups, views.data(), c.data(), mode, &pool);
      for (size_t i = 0; i < c.size(); ++i)
        ASSERT_NEAR(c[i], ref[i], 1e-5 * (1 + std::fabs(ref[i]))) << isa_level_name(level) << " " << i;
    }
  }
}

TEST(Gemm, RejectsBadWeights) {
  std::vector<float> a(128), c(4);
  WeightMatrix w;
  w.dtype = DType::I32;
  w.n = 4;
  w.k = 128;
  w.data = a.data();
  EXPECT_THROW(gemm(a.data(), 1, w, c.data(), GemmMode::W8A32, nullptr), Error);
  w.dtype = DType::F8_E4M3;  // no scale_inv
  EXPECT_THROW(gemm(a.data(), 1, w, c.data(), GemmMode::W8A32, nullptr), Error);
  w.dtype = DType::F32;
  w.data = nullptr;
  EXPECT_THROW(gemm(a.data(), 1, w, c.data(), GemmMode::W8A32, nullptr), Error);
}

// ---------------------------------------------------------------------------------------------------------------
// Batch invariance: row i of C is bitwise the same whether computed alone, in a batch of 3, 17 or 300, with any
// thread count, and through grouped_gemm — on each ISA level (M ≤ 4, on AVX-512 M ≤ 8, takes the GEMV path);
// and the ISA levels equal each other.

void expect_rows_equal(const std::vector<float>& full, int64_t row0, const std::vector<float>& part, int64_t rows,
                       int64_t n, const std::string& what) {
  ASSERT_EQ(0, std::memcmp(full.data() + row0 * n, part.data(), size_t(rows * n) * sizeof(float))) << what;
}

TEST(GemmBatchInvariance, RowsBitwiseIndependentOfBatchThreadsAndGrouping) {
  const int64_t n = 260, k = 512, m = 300;
  const auto a = random_normal(size_t(m * k), 123, 1.0f);
  for (auto [dtype, mode] : {std::pair{DType::F8_E4M3, GemmMode::W8A32}, {DType::F8_E4M3, GemmMode::W8A8},
                             {DType::F8_E4M3, GemmMode::W8A16}, {DType::BF16, GemmMode::W8A32},
                             {DType::BF16, GemmMode::W8A16}}) {
    const OwnedWeight w = make_weight(dtype, random_normal(size_t(n * k), 321, 0.05f), n, k);
    ThreadPool one(1), two(2), three(3);
    for (IsaLevel level : levels()) {
      const std::string tag = std::string(dtype_name(dtype)) + " " + mode_name(mode) + " " + isa_level_name(level);
      std::vector<float> full(size_t(m * n));
      gemm_at_level(level, a.data(), m, w.view, full.data(), mode, &two);
      for (auto [row0, rows] : {std::pair<int64_t, int64_t>{0, 1}, {299, 1}, {5, 3}, {10, 4}, {20, 5}, {50, 6},
                                {60, 7}, {70, 8}, {30, 9}, {40, 16}, {100, 17}, {64, 64}}) {
        std::vector<float> part(size_t(rows * n));
        gemm_at_level(level, a.data() + row0 * k, rows, w.view, part.data(), mode, &one);
        expect_rows_equal(full, row0, part, rows, n,
                          tag + " rows " + std::to_string(row0) + "+" + std::to_string(rows));
        // One row here (133k multiply-adds) runs on the calling thread; from 3 rows on, the call is split over the
        // threads, on the GEMV path up to its row limit and on the tiled path beyond.
        gemm_at_level(level, a.data() + row0 * k, rows, w.view, part.data(), mode, &three);
        expect_rows_equal(full, row0, part, rows, n,
                          tag + " rows " + std::to_string(row0) + "+" + std::to_string(rows) + " 3 threads");
      }
      std::vector<float> again(size_t(m * n));
      gemm_at_level(level, a.data(), m, w.view, again.data(), mode, &three);
      expect_rows_equal(full, 0, again, m, n, tag + " 3 threads");
      gemm_at_level(level, a.data(), m, w.view, again.data(), mode, nullptr);
      expect_rows_equal(full, 0, again, m, n, tag + " no pool");
      const std::vector<int64_t> offsets = {0, 1, 1, 4, 21, 150, 300};
      const std::vector<WeightMatrix> views(offsets.size() - 1, w.view);
      grouped_gemm_at_level(level, a.data(), offsets.data(), int64_t(views.size()), views.data(), again.data(),
                            mode, &two);
      expect_rows_equal(full, 0, again, m, n, tag + " grouped");
    }
  }
}

// Every e4m3 code decodes to its exact value on every path (GEMV and GEMM, every ISA level): with unit-vector rows
// of A, C[i, j] is the single weight W[j, k_i]. Codes 0x7F/0xFF (NaN, not valid weights) read as ±480 (gemm.h).
TEST(Gemm, EveryFp8CodeDecodesExactlyOnEveryPath) {
  const int64_t n = 16, k = 256;
  std::vector<uint8_t> codes(size_t(n * k));
  for (int64_t j = 0; j < n; ++j)
    for (int64_t c = 0; c < k; ++c) codes[size_t(j * k + c)] = uint8_t((c + 37 * j) % 256);
  const std::vector<float> scale_inv(2, 1.0f);  // [ceil(16/128), ceil(256/128)]
  const WeightMatrix w{DType::F8_E4M3, n, k, codes.data(), scale_inv.data()};
  ThreadPool pool(2);
  for (IsaLevel level : levels())
    for (int64_t m : {1, 7, 16, 256}) {
      std::vector<float> a(size_t(m * k), 0.0f), c(size_t(m * n));
      for (int64_t i = 0; i < m; ++i) a[size_t(i * k + (i * 59 + 3) % k)] = 1.0f;
      gemm_at_level(level, a.data(), m, w, c.data(), GemmMode::W8A32, &pool);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
          const uint8_t code = codes[size_t(j * k + (i * 59 + 3) % k)];
          const float expect = (code & 0x7F) == 0x7F ? ((code & 0x80) ? -480.0f : 480.0f) : fp8_e4m3_to_f32(code);
          ASSERT_EQ(expect, c[size_t(i * n + j)])
              << isa_level_name(level) << " M=" << m << " code 0x" << std::hex << int(code);
        }
    }
}

// Scalar (std::fma), AVX2 and AVX-512 evaluate one order (gemm.h), so they agree bit for bit: on the GEMV path
// (M ≤ 4, and AVX-512's passes at 5–8) and the GEMM path, with partial last K blocks and partial W panels, for
// every weight dtype. Levels that take the BF16 dot-product order (gemm_bf16_dot_test.cpp) are compared with
// each other only.
TEST(GemmBatchInvariance, IsaLevelsAgreeBitwise) {
  ThreadPool pool(2);
  const std::vector<IsaLevel> all = levels();
  ASSERT_GE(all.size(), 1u);
  for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{1, 2112, 7168}, {3, 70, 1000}, {4, 33, 200},
                         {5, 129, 1000}, {6, 37, 520}, {8, 70, 1000}, {13, 40, 300}, {17, 129, 1000},
                         {300, 100, 384}, {1, 1000, 256}})
    for (DType dtype : {DType::F8_E4M3, DType::BF16, DType::F32})
      for (auto mode : {GemmMode::W8A32, GemmMode::W8A8, GemmMode::W8A16}) {
        if (dtype == DType::F32 && mode != GemmMode::W8A32) continue;
        if (dtype == DType::BF16 && mode == GemmMode::W8A8) continue;
        const auto a = random_normal(size_t(m * k), 5, 1.0f);
        const OwnedWeight w = make_weight(dtype, random_normal(size_t(n * k), 6, 0.05f), n, k);
        std::vector<float> first(size_t(m * n));
        gemm_at_level(all[0], a.data(), m, w.view, first.data(), mode, &pool);
        for (size_t l = 1; l < all.size(); ++l) {
          if (gemm_detail::bf16_dot_at_level(all[l], mode, dtype)) continue;
          std::vector<float> c(size_t(m * n));
          gemm_at_level(all[l], a.data(), m, w.view, c.data(), mode, &pool);
          EXPECT_EQ(0, std::memcmp(first.data(), c.data(), c.size() * sizeof(float)))
              << isa_level_name(all[0]) << " vs " << isa_level_name(all[l]) << " " << dtype_name(dtype) << " "
              << mode_name(mode) << " " << m << "x" << n << "x" << k;
        }
      }
}

}  // namespace
}  // namespace deepmoe
