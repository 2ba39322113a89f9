// The absorbed attention core over a paged cache (blocks of rows at scattered addresses, found through a block
// table) gives bitwise the result of the same rows in one contiguous array, at every ISA level, for block sizes
// that do and do not line up with the AVX-512 path's three-row passes; and matches the FP64 _ref twin.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <numeric>
#include <vector>

#include "core/cpu_features.h"
#include "core/dtype.h"
#include "core/thread_pool.h"
#include "kernels/attention.h"
#include "test_util.h"

namespace deepmoe {
namespace {

using testing_util::max_rel_diff;
using testing_util::random_vector;

// The rows of `contiguous` ([n_rows, row] elements of elem_bytes each) copied into blocks of `block_rows` rows,
// placed in reverse order with a gap between blocks; returns the block table.
std::vector<const void*> scatter(const void* contiguous, int64_t n_rows, int64_t row, size_t elem_bytes,
                                 int64_t block_rows, std::vector<uint8_t>& storage) {
  const int64_t n_blocks = (n_rows + block_rows - 1) / block_rows;
  const size_t block_bytes = size_t(block_rows * row) * elem_bytes, stride = block_bytes + 64;
  storage.assign(size_t(n_blocks) * stride + 64, 0xAB);  // never-written rows hold garbage, not zeros
  std::vector<const void*> table(static_cast<size_t>(n_blocks));
  for (int64_t b = 0; b < n_blocks; ++b) {
    uint8_t* dst = storage.data() + size_t(n_blocks - 1 - b) * stride + 4 * elem_bytes;  // unaligned on purpose
    const int64_t rows = std::min(block_rows, n_rows - b * block_rows);
    std::copy_n(static_cast<const uint8_t*>(contiguous) + size_t(b * block_rows * row) * elem_bytes,
                size_t(rows * row) * elem_bytes, dst);
    table[size_t(b)] = dst;
  }
  return table;
}

TEST(AttentionPaged, AbsorbedOverBlocksIsBitwiseEqualToContiguousAtEveryLevel) {
  const CpuFeatures& cpu = cpu_features();
  std::vector<IsaLevel> levels = {IsaLevel::Scalar};
  if (cpu.level >= IsaLevel::Avx2) levels.push_back(IsaLevel::Avx2);
  if (cpu.level >= IsaLevel::Avx512) levels.push_back(IsaLevel::Avx512);
  ThreadPool pool(2);
  const int64_t n_q = 4, start = 19, ctx = start + n_q;
  for (auto [H, C, R] : std::vector<std::array<int, 3>>{{5, 37, 11}, {19, 64, 16}, {8, 53, 4}})
    for (DType dt : {DType::F32, DType::BF16}) {
      const int64_t row = C + R + (dt == DType::BF16 ? 3 : 0);
      const size_t elem = dtype_size_bytes(dt);
      auto ql = random_vector(size_t(n_q * H * C), 1), qr = random_vector(size_t(n_q * H * R), 2);
      auto c32 = random_vector(size_t(ctx * row), 3, -2, 2);
      std::vector<uint16_t> c16(c32.size());
      convert_f32_to_bf16(c32.data(), c16.data(), c32.size());
      const void* cache = dt == DType::F32 ? static_cast<const void*>(c32.data()) : c16.data();
      std::vector<int64_t> vis(static_cast<size_t>(n_q));
      std::iota(vis.begin(), vis.end(), start + 1);
      for (IsaLevel level : levels) {
        std::vector<float> want(size_t(n_q * H * C));
        AbsorbedAttentionArgs a{ql.data(), qr.data(), cache, dt, row, want.data(), n_q, ctx, H, C, R, vis.data(),
                                0.3f};
        attention_absorbed_at_level(level, a, &pool);
        for (int64_t block_rows : {1, 2, 3, 4, 5, 64}) {
          std::vector<uint8_t> storage;
          const auto table = scatter(cache, ctx, row, elem, block_rows, storage);
          std::vector<float> got(want.size(), -1.0f);
          AbsorbedAttentionArgs p = a;
          p.cache = nullptr;
          p.cache_blocks = table.data();
          p.block_rows = block_rows;
          p.out = got.data();
          attention_absorbed_at_level(level, p, &pool);
          ASSERT_EQ(got, want) << "level " << int(level) << " " << dtype_name(dt) << " block_rows " << block_rows
                               << " heads " << H << " latent " << C;
          if (level == IsaLevel::Scalar && block_rows == 3) {
            std::vector<float> ref(want.size());
            p.out = ref.data();
            attention_absorbed_ref(p);
            EXPECT_LT(max_rel_diff(got, ref), 1e-5);
          }
        }
      }
    }
}

}  // namespace
}  // namespace deepmoe
