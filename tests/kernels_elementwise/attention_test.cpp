// MLA attention cores against their FP64 _ref twins, and the absorbed form against the naive form on K/V
// decompressed from the same latent (reference §1.5: the two forms are algebraically equal).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <vector>

#include "core/dtype.h"
#include "core/thread_pool.h"
#include "kernels/attention.h"
#include "test_util.h"

namespace deepmoe {
namespace {

using testing_util::max_rel_diff;
using testing_util::random_vector;

std::vector<int64_t> causal_visible(int64_t start, int64_t n_q) {
  std::vector<int64_t> v(static_cast<size_t>(n_q));
  for (int64_t i = 0; i < n_q; ++i) v[size_t(i)] = start + i + 1;
  return v;
}

TEST(AttentionNaive, MatchesRef) {
  ThreadPool pool(2);
  for (auto [n_q, start, heads, qk, vd] : std::vector<std::array<int, 5>>{
           {1, 0, 1, 3, 2}, {1, 9, 4, 24, 16}, {5, 0, 3, 13, 7}, {4, 6, 2, 192, 128}}) {
    const int64_t ctx = start + n_q;
    auto q = random_vector(size_t(n_q * heads * qk), 1, -2, 2);
    auto k = random_vector(size_t(ctx * heads * qk), 2, -2, 2);
    auto v = random_vector(size_t(ctx * heads * vd), 3);
    auto vis = causal_visible(start, n_q);
    std::vector<float> out(size_t(n_q * heads * vd)), ref(out.size());
    NaiveAttentionArgs a{q.data(), k.data(), v.data(), out.data(), n_q, ctx, heads, qk, vd, vis.data(), 0.3f};
    attention_naive(a, &pool);
    a.out = ref.data();
    attention_naive_ref(a);
    EXPECT_LT(max_rel_diff(out, ref), 1e-5);
  }
}

TEST(AttentionNaive, SingleVisibleTokenReturnsItsValue) {
  std::vector<float> q = {1, 2}, k = {3, 4, 5, 6}, v = {7, 8};
  std::vector<float> out(1);
  int64_t vis = 1;
  NaiveAttentionArgs a{q.data(), k.data(), v.data(), out.data(), 1, 2, 1, 2, 1, &vis, 1.0f};
  attention_naive(a);
  EXPECT_EQ(out[0], 7.0f);
}

void absorbed_vs_ref(DType dtype) {
  ThreadPool pool(2);
  for (auto [n_q, start, heads, C, R] : std::vector<std::array<int, 5>>{
           {1, 0, 1, 4, 2}, {1, 12, 9, 32, 8}, {6, 0, 3, 17, 5}, {3, 4, 16, 64, 16}}) {
    const int64_t ctx = start + n_q, row = C + R + 3;
    auto ql = random_vector(size_t(n_q * heads * C), 1), qr = random_vector(size_t(n_q * heads * R), 2);
    auto cache32 = random_vector(size_t(ctx * row), 3, -2, 2);
    std::vector<uint16_t> cache16(cache32.size());
    convert_f32_to_bf16(cache32.data(), cache16.data(), cache32.size());
    const void* cache = dtype == DType::F32 ? static_cast<const void*>(cache32.data()) : cache16.data();
    auto vis = causal_visible(start, n_q);
    std::vector<float> out(size_t(n_q * heads * C)), ref(out.size());
    AbsorbedAttentionArgs a{ql.data(), qr.data(), cache, dtype, row, out.data(), n_q, ctx, heads, C, R,
                            vis.data(), 0.25f};
    attention_absorbed(a, &pool);
    a.out = ref.data();
    attention_absorbed_ref(a);
    EXPECT_LT(max_rel_diff(out, ref), 1e-5) << n_q << " " << heads;
  }
}

TEST(AttentionAbsorbed, MatchesRefF32Cache) { absorbed_vs_ref(DType::F32); }
TEST(AttentionAbsorbed, MatchesRefBf16Cache) { absorbed_vs_ref(DType::BF16); }

// k_nope[t,h] = W_UK[h]·c_t, v[t,h] = W_UV[h]·c_t, q_latent[h] = W_UK[h]ᵀ·q_nope[h]: then
// naive(q_nope|q_pe, k_nope|k_pe, v) == W_UV[h]·absorbed(q_latent, q_pe, [c|k_pe]).
TEST(AttentionAbsorbed, EqualsNaiveOnDecompressedKeysAndValues) {
  const int H = 3, C = 16, R = 4, Dn = 6, Dv = 5;
  const int64_t n_q = 4, start = 3, ctx = start + n_q;
  auto w_uk = random_vector(size_t(H * Dn * C), 11), w_uv = random_vector(size_t(H * Dv * C), 12);
  auto cache = random_vector(size_t(ctx * (C + R)), 13);
  auto q_nope = random_vector(size_t(n_q * H * Dn), 14), q_pe = random_vector(size_t(n_q * H * R), 15);
  std::vector<float> q(size_t(n_q * H * (Dn + R))), k(size_t(ctx * H * (Dn + R))), v(size_t(ctx * H * Dv));
  for (int64_t i = 0; i < n_q; ++i)
    for (int h = 0; h < H; ++h) {
      for (int d = 0; d < Dn; ++d) q[size_t((i * H + h) * (Dn + R) + d)] = q_nope[size_t((i * H + h) * Dn + d)];
      for (int d = 0; d < R; ++d) q[size_t((i * H + h) * (Dn + R) + Dn + d)] = q_pe[size_t((i * H + h) * R + d)];
    }
  for (int64_t t = 0; t < ctx; ++t)
    for (int h = 0; h < H; ++h) {
      const float* c = cache.data() + t * (C + R);
      for (int d = 0; d < Dn; ++d) {
        double s = 0;
        for (int j = 0; j < C; ++j) s += double(w_uk[size_t((h * Dn + d) * C + j)]) * c[j];
        k[size_t((t * H + h) * (Dn + R) + d)] = float(s);
      }
      for (int d = 0; d < R; ++d) k[size_t((t * H + h) * (Dn + R) + Dn + d)] = c[C + d];
      for (int d = 0; d < Dv; ++d) {
        double s = 0;
        for (int j = 0; j < C; ++j) s += double(w_uv[size_t((h * Dv + d) * C + j)]) * c[j];
        v[size_t((t * H + h) * Dv + d)] = float(s);
      }
    }
  std::vector<float> q_lat(size_t(n_q * H * C));
  for (int64_t i = 0; i < n_q; ++i)
    for (int h = 0; h < H; ++h)
      for (int j = 0; j < C; ++j) {
        double s = 0;
        for (int d = 0; d < Dn; ++d) s += double(q_nope[size_t((i * H + h) * Dn + d)]) * w_uk[size_t((h * Dn + d) * C + j)];
        q_lat[size_t((i * H + h) * C + j)] = float(s);
      }
  auto vis = causal_visible(start, n_q);
  std::vector<float> naive(size_t(n_q * H * Dv)), lat(size_t(n_q * H * C));
  attention_naive({q.data(), k.data(), v.data(), naive.data(), n_q, ctx, H, Dn + R, Dv, vis.data(), 0.2f});
  attention_absorbed({q_lat.data(), q_pe.data(), cache.data(), DType::F32, C + R, lat.data(), n_q, ctx, H, C, R,
                      vis.data(), 0.2f});
  std::vector<float> absorbed(naive.size());
  for (int64_t i = 0; i < n_q; ++i)
    for (int h = 0; h < H; ++h)
      for (int d = 0; d < Dv; ++d) {
        double s = 0;
        for (int j = 0; j < C; ++j) s += double(w_uv[size_t((h * Dv + d) * C + j)]) * lat[size_t((i * H + h) * C + j)];
        absorbed[size_t((i * H + h) * Dv + d)] = float(s);
      }
  EXPECT_LT(max_rel_diff(absorbed, naive), 1e-5);
}

TEST(AttentionAbsorbed, QueryRowsDoNotDependOnBatchOrThreads) {
  const int H = 10, C = 32, R = 8;
  const int64_t n_q = 5, ctx = 9;
  auto ql = random_vector(size_t(n_q * H * C), 1), qr = random_vector(size_t(n_q * H * R), 2);
  auto cache = random_vector(size_t(ctx * (C + R)), 3);
  std::vector<int64_t> vis = {5, 6, 7, 8, 9};
  std::vector<float> all(size_t(n_q * H * C)), one(size_t(H * C));
  ThreadPool pool(2);
  attention_absorbed({ql.data(), qr.data(), cache.data(), DType::F32, C + R, all.data(), n_q, ctx, H, C, R,
                      vis.data(), 0.3f}, &pool);
  for (int64_t i = 0; i < n_q; ++i) {
    attention_absorbed({ql.data() + i * H * C, qr.data() + i * H * R, cache.data(), DType::F32, C + R, one.data(),
                        1, ctx, H, C, R, vis.data() + i, 0.3f}, nullptr);
    for (int j = 0; j < H * C; ++j) ASSERT_EQ(one[size_t(j)], all[size_t(i * H * C + j)]);
  }
}

}  // namespace
}  // namespace deepmoe

namespace deepmoe {
namespace {

TEST(Attention, AvxPathIsBitwiseEqualToBaseline) {
  const CpuFeatures& cpu = cpu_features();
  if (!(cpu.avx2 && cpu.fma)) GTEST_SKIP() << "CPU without AVX2";
  const int H = 5, C = 37, R = 11, qk = 29, vd = 19;
  const int64_t n_q = 3, ctx = 7;
  auto ql = testing_util::random_vector(size_t(n_q * H * C), 1), qr = testing_util::random_vector(size_t(n_q * H * R), 2);
  auto cache = testing_util::random_vector(size_t(ctx * (C + R)), 3);
  std::vector<int64_t> vis = {5, 6, 7};
  std::vector<float> o1(size_t(n_q * H * C)), o2(o1.size());
  AbsorbedAttentionArgs a{ql.data(), qr.data(), cache.data(), DType::F32, C + R, o1.data(), n_q, ctx, H, C, R,
                          vis.data(), 0.3f};
  attention_absorbed_at_level(IsaLevel::Scalar, a, nullptr);
  a.out = o2.data();
  attention_absorbed_at_level(IsaLevel::Avx2, a, nullptr);
  EXPECT_EQ(o1, o2);
  // The AVX-512 loops (head pairs, three cache rows per pass) where the CPU has them.
  const bool avx512 = cpu.level >= IsaLevel::Avx512;
  if (avx512) {
    std::fill(o2.begin(), o2.end(), 0.0f);
    attention_absorbed_at_level(IsaLevel::Avx512, a, nullptr);
    EXPECT_EQ(o1, o2) << "avx512";
    // Scores hundreds apart: the softmax's exponentials below -88, where exp_f32 leaves its polynomial.
    AbsorbedAttentionArgs wide = a;
    wide.scale = 60.0f;
    wide.out = o1.data();
    attention_absorbed_at_level(IsaLevel::Scalar, wide, nullptr);
    wide.out = o2.data();
    attention_absorbed_at_level(IsaLevel::Avx512, wide, nullptr);
    EXPECT_EQ(o1, o2) << "avx512, wide scores";
  }
  // More heads than one group of the AVX2 path (8) plus a partial group, and a BF16 cache with padded rows.
  {
    const int H2 = 19, row = C + R + 3;
    auto ql2 = testing_util::random_vector(size_t(n_q * H2 * C), 7);
    auto qr2 = testing_util::random_vector(size_t(n_q * H2 * R), 8);
    auto c32 = testing_util::random_vector(size_t(ctx * row), 9);
    std::vector<uint16_t> c16(c32.size());
    for (size_t j = 0; j < c32.size(); ++j) c16[j] = f32_to_bf16(c32[j]);
    for (DType dt : {DType::F32, DType::BF16}) {
      std::vector<float> p1(size_t(n_q * H2 * C)), p2(p1.size());
      const void* cache2 = dt == DType::F32 ? static_cast<const void*>(c32.data()) : c16.data();
      AbsorbedAttentionArgs b2{ql2.data(), qr2.data(), cache2, dt, row, p1.data(), n_q, ctx, H2, C, R, vis.data(),
                               0.3f};
      attention_absorbed_at_level(IsaLevel::Scalar, b2, nullptr);
      b2.out = p2.data();
      attention_absorbed_at_level(IsaLevel::Avx2, b2, nullptr);
      EXPECT_EQ(p1, p2) << dtype_name(dt);
      if (avx512) {
        std::fill(p2.begin(), p2.end(), 0.0f);
        attention_absorbed_at_level(IsaLevel::Avx512, b2, nullptr);
        EXPECT_EQ(p1, p2) << dtype_name(dt) << " avx512";
      }
    }
  }
  // Latent widths with a 16-wide masked step in the weighted sum (53), no tail at all (64), and rope widths
  // shorter than one 8-lane chunk (4) or with no tail (16).
  if (avx512)
    for (auto [C3, R3] : {std::pair{53, 4}, std::pair{64, 16}}) {
      const int H3 = 7;
      auto ql3 = testing_util::random_vector(size_t(n_q * H3 * C3), 10);
      auto qr3 = testing_util::random_vector(size_t(n_q * H3 * R3), 11);
      auto c3 = testing_util::random_vector(size_t(ctx * (C3 + R3)), 12);
      std::vector<float> p1(size_t(n_q * H3 * C3)), p2(p1.size());
      AbsorbedAttentionArgs b3{ql3.data(), qr3.data(), c3.data(), DType::F32, C3 + R3, p1.data(), n_q, ctx, H3, C3,
                               R3, vis.data(), 0.3f};
      attention_absorbed_at_level(IsaLevel::Scalar, b3, nullptr);
      b3.out = p2.data();
      attention_absorbed_at_level(IsaLevel::Avx512, b3, nullptr);
      EXPECT_EQ(p1, p2) << "latent " << C3 << " rope " << R3;
    }
  auto q = testing_util::random_vector(size_t(n_q * H * qk), 4), k = testing_util::random_vector(size_t(ctx * H * qk), 5);
  auto v = testing_util::random_vector(size_t(ctx * H * vd), 6);
  std::vector<float> n1(size_t(n_q * H * vd)), n2(n1.size());
  NaiveAttentionArgs b{q.data(), k.data(), v.data(), n1.data(), n_q, ctx, H, qk, vd, vis.data(), 0.2f};
  attention_naive_at_level(IsaLevel::Scalar, b, nullptr);
  b.out = n2.data();
  attention_naive_at_level(IsaLevel::Avx2, b, nullptr);
  EXPECT_EQ(n1, n2);
}

}  // namespace
}  // namespace deepmoe

namespace deepmoe {
namespace {

// The AVX-512 path takes several queries per work item and walks the cache in row blocks shared by them: with
// more queries than one item holds (and a partial item), contexts longer than a row block, queries that see
// different numbers of rows (not only causal), a partial head group, odd widths, F32 and BF16 caches, contiguous
// and paged, every output equals the scalar baseline's bit for bit, and each query computed alone gives the same
// bits as in the batch. Widths with tails (53, 11) take the separate latent and rope dot passes, multiples of 8
// (64, 16) the fused score pass.
TEST(Attention, QueryBlocksAreBitwiseEqualToBaselineAndToEachQueryAlone) {
  const CpuFeatures& cpu = cpu_features();
  if (cpu.level < IsaLevel::Avx512) GTEST_SKIP() << "CPU without AVX-512";
  ThreadPool pool(2);
  for (auto [C, R] : {std::pair{53, 11}, std::pair{64, 16}}) {
    SCOPED_TRACE("latent " + std::to_string(C) + " rope " + std::to_string(R));
    const int H = 19;
    const int64_t n_q = 21, start = 140, ctx = start + n_q, row = C + R + 3;
    auto ql = testing_util::random_vector(size_t(n_q * H * C), 21);
    auto qr = testing_util::random_vector(size_t(n_q * H * R), 22);
    auto c32 = testing_util::random_vector(size_t(ctx * row), 23, -2, 2);
    std::vector<uint16_t> c16(c32.size());
    convert_f32_to_bf16(c32.data(), c16.data(), c32.size());
    std::vector<int64_t> vis = causal_visible(start, n_q);
    vis[3] = 1;      // a query that sees one row, inside an item of long ones
    vis[9] = ctx;    // one that sees more than its successors
    vis[10] = 64;    // exactly one row block
    vis[11] = 65;    // one row into the next
    for (DType dt : {DType::F32, DType::BF16}) {
      const void* cache = dt == DType::F32 ? static_cast<const void*>(c32.data()) : c16.data();
      const size_t elem = dtype_size_bytes(dt);
      std::vector<float> want(size_t(n_q * H * C)), got(want.size());
      AbsorbedAttentionArgs a{ql.data(), qr.data(), cache, dt, row, want.data(), n_q, ctx, H, C, R, vis.data(), 0.3f};
      attention_absorbed_at_level(IsaLevel::Scalar, a, &pool);
      a.out = got.data();
      attention_absorbed_at_level(IsaLevel::Avx512, a, &pool);
      ASSERT_EQ(got, want) << dtype_name(dt);
      // Paged: 16-row blocks (the KV cache's) and 5-row blocks that cut through the 64-row blocks and 3-row passes.
      for (int64_t block_rows : {16, 5}) {
        std::vector<std::vector<uint8_t>> blocks;
        std::vector<const void*> table;
        for (int64_t t0 = 0; t0 < ctx; t0 += block_rows) {
          const int64_t rows = std::min(block_rows, ctx - t0);
          blocks.emplace_back(size_t(block_rows * row) * elem + 4, uint8_t(0xAB));
          std::copy_n(static_cast<const uint8_t*>(cache) + size_t(t0 * row) * elem, size_t(rows * row) * elem,
                      blocks.back().data() + 4);
          table.push_back(blocks.back().data() + 4);
        }
        AbsorbedAttentionArgs p = a;
        p.cache = nullptr;
        p.cache_blocks = table.data();
        p.block_rows = block_rows;
        std::fill(got.begin(), got.end(), -1.0f);
        attention_absorbed_at_level(IsaLevel::Avx512, p, &pool);
        ASSERT_EQ(got, want) << dtype_name(dt) << " block_rows " << block_rows;
      }
      std::vector<float> one(size_t(H * C));
      for (int64_t i = 0; i < n_q; ++i) {
        AbsorbedAttentionArgs s = a;
        s.q_latent = ql.data() + i * H * C;
        s.q_rope = qr.data() + i * H * R;
        s.out = one.data();
        s.n_queries = 1;
        s.n_visible = vis.data() + i;
        attention_absorbed_at_level(IsaLevel::Avx512, s, nullptr);
        for (int j = 0; j < H * C; ++j) ASSERT_EQ(one[size_t(j)], want[size_t(i * H * C + j)]) << dtype_name(dt) << i;
      }
    }
  }
}

}  // namespace
}  // namespace deepmoe
