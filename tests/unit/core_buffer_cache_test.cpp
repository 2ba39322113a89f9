#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "core/buffer_cache.h"
#include "core/tensor.h"

namespace deepmoe {
namespace {

bool aligned64(const void* p) { return reinterpret_cast<uintptr_t>(p) % 64 == 0; }

TEST(BufferCache, BuffersAreAlignedAndWritable) {
  for (size_t bytes : {size_t(0), size_t(1), size_t(100), size_t(64) << 10, (size_t(64) << 10) + 1,
                       size_t(3) << 20, size_t(10'000'019)}) {
    void* p = buffer_alloc(bytes);
    ASSERT_NE(p, nullptr) << bytes;
    EXPECT_TRUE(aligned64(p)) << bytes;
    std::memset(p, 0xAB, bytes);
    buffer_free(p, bytes);
  }
  buffer_free(nullptr, 123);  // a no-op, like free(nullptr)
}

// Buffers of 2 MiB and more start on a 2 MiB boundary, so the kernel can back them with huge pages (fewer page
// faults on a prefill's first pass); smaller ones need only 64 bytes.
TEST(BufferCache, LargeBuffersStartOnAHugePageBoundary) {
  for (size_t bytes : {size_t(2) << 20, (size_t(2) << 20) + 1, size_t(3) << 20, size_t(10'000'019)}) {
    void* p = buffer_alloc(bytes);
    ASSERT_NE(p, nullptr) << bytes;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % (size_t(2) << 20), 0u) << bytes;
    std::memset(p, 0xCD, bytes);
    buffer_free(p, bytes);
  }
}

TEST(BufferCache, AFreedLargeBufferIsHandedOutAgain) {
  if (!buffer_cache_enabled()) GTEST_SKIP() << "caching is off under AddressSanitizer";
  const size_t bytes = size_t(5) << 20;
  void* p = buffer_alloc(bytes);
  const size_t idle_before = buffer_cache_idle_bytes();
  buffer_free(p, bytes);
  EXPECT_GE(buffer_cache_idle_bytes(), idle_before + bytes);
  // A slightly different size in the same class gets the same buffer back, and it is no longer idle.
  void* q = buffer_alloc(bytes - 1000);
  EXPECT_EQ(q, p);
  EXPECT_EQ(buffer_cache_idle_bytes(), idle_before);
  buffer_free(q, bytes - 1000);
}

// Small buffers come back from the thread's own stacks: the most recently freed one of the class first, the
// shared cache of large buffers untouched, and never one still in use.
TEST(BufferCache, AFreedSmallBufferIsHandedOutAgainOnTheSameThread) {
  if (!buffer_cache_enabled()) GTEST_SKIP() << "caching is off under AddressSanitizer";
  const size_t idle_large = buffer_cache_idle_bytes();
  void* a = buffer_alloc(700);
  void* b = buffer_alloc(700);
  ASSERT_NE(a, b);
  std::memset(a, 1, 700);
  std::memset(b, 2, 700);
  buffer_free(a, 700);
  void* c = buffer_alloc(650);  // the same 64-byte class (704 bytes)
  EXPECT_EQ(c, a);
  void* d = buffer_alloc(650);  // a's class is empty again: a fresh buffer, not b (in use)
  EXPECT_NE(d, b);
  EXPECT_NE(d, c);
  EXPECT_TRUE(aligned64(d));
  void* e = buffer_alloc(100);  // another class: not a
  EXPECT_NE(e, c);
  EXPECT_EQ(buffer_cache_idle_bytes(), idle_large);
  for (void* p : {b, c, d}) buffer_free(p, 700);
  buffer_free(e, 100);
}

TEST(BufferCache, IdleBytesStayWithinTheLimit) {
  const size_t limit = buffer_cache_limit();
  ASSERT_GE(limit, size_t(256) << 20);
  const size_t bytes = limit / 3 + 4096;  // three of these do not fit
  std::vector<void*> held;
  for (int i = 0; i < 3; ++i) held.push_back(buffer_alloc(bytes));
  for (void* p : held) buffer_free(p, bytes);
  EXPECT_LE(buffer_cache_idle_bytes(), limit);
  if (buffer_cache_enabled()) EXPECT_GE(buffer_cache_idle_bytes(), bytes);  // the most recent one is kept
  // Too large to keep at all: freed outright, the cache is unchanged.
  const size_t idle = buffer_cache_idle_bytes();
  void* huge = buffer_alloc(limit + 4096);
  buffer_free(huge, limit + 4096);
  EXPECT_EQ(buffer_cache_idle_bytes(), idle);
}

TEST(BufferCache, ZerosIsZeroEvenOnARecycledBuffer) {
  const int64_t rows = 1024, cols = 1000;  // 4 MB: recycled
  {
    Tensor dirty = Tensor::uninitialized(DType::F32, {rows, cols});
    EXPECT_TRUE(aligned64(dirty.raw()));
    EXPECT_EQ(dirty.numel(), rows * cols);
    std::memset(dirty.raw(), 0xFF, dirty.nbytes());
  }
  const Tensor z = Tensor::zeros(DType::F32, {rows, cols});
  const float* p = z.data<float>();
  for (int64_t i = 0; i < rows * cols; ++i) ASSERT_EQ(p[i], 0.0f) << i;
}

}  // namespace
}  // namespace deepmoe
