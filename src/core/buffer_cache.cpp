#include "core/buffer_cache.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "core/error.h"

// Under AddressSanitizer buffers go straight back to the allocator, so a use after free is still reported.
#if defined(__SANITIZE_ADDRESS__)
#define DEEPMOE_BUFFER_CACHE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DEEPMOE_BUFFER_CACHE 0
#endif
#endif
#ifndef DEEPMOE_BUFFER_CACHE
#define DEEPMOE_BUFFER_CACHE 1
#endif

namespace deepmoe {
namespace {

// Below this, malloc's own free lists already reuse memory without page faults.
constexpr size_t kSmallBytes = size_t(64) << 10;
constexpr size_t kHugePage = size_t(2) << 20;

// Sizes are rounded up to one of 8 steps per power of two (at most 12.5% slack), so buffers of nearly the same
// size share a class.
size_t size_class(size_t bytes) {
  if (bytes <= kSmallBytes) return (std::max<size_t>(bytes, 64) + 63) / 64 * 64;
  const int top = 63 - __builtin_clzll(bytes);
  const size_t step = size_t(1) << (top - 3);
  return (bytes + step - 1) / step * step;
}

struct Cache {
  std::mutex mutex;
  std::multimap<size_t, void*> idle;  // size class → buffer
  size_t idle_bytes = 0;
};

Cache& cache() {
  static Cache* c = new Cache;  // never destroyed: buffers may be freed during static destruction
  return *c;
}

}  // namespace

size_t buffer_cache_limit() {
  static const size_t limit = [] {
    const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
    const size_t physical = pages > 0 && page > 0 ? size_t(pages) * size_t(page) : 0;
    return std::max<size_t>(physical / 16, size_t(256) << 20);
  }();
  return limit;
}

bool buffer_cache_enabled() { return DEEPMOE_BUFFER_CACHE; }

size_t buffer_cache_idle_bytes() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  return c.idle_bytes;
}

void* buffer_alloc(size_t bytes) {
  const size_t cls = size_class(bytes);
  if (DEEPMOE_BUFFER_CACHE && cls > kSmallBytes) {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    if (auto it = c.idle.find(cls); it != c.idle.end()) {
      void* p = it->second;
      c.idle.erase(it);
      c.idle_bytes -= cls;
      return p;
    }
  }
  // Large buffers on 2 MiB pages where the kernel allows (transparent huge pages in "madvise" mode): a prefill's
  // first pass faults each 4 KiB page of tens of MB of activations in one by one otherwise, and GEMMs that read
  // rows K floats apart touch a different 4 KiB page per row.
  const bool huge = cls >= kHugePage;
  const size_t align = huge ? kHugePage : 64, size = (cls + align - 1) / align * align;
  void* p = std::aligned_alloc(align, size);
  if (!p) throw Error("out of memory allocating " + std::to_string(cls) + " bytes");
  if (huge) ::madvise(p, size, MADV_HUGEPAGE);  // advice only: without it the buffer still works on 4 KiB pages
  return p;
}

void buffer_free(void* p, size_t bytes) {
  if (!p) return;
  const size_t cls = size_class(bytes);
  if (DEEPMOE_BUFFER_CACHE && cls > kSmallBytes && cls <= buffer_cache_limit()) {
    std::vector<void*> evicted;
    {
      Cache& c = cache();
      std::lock_guard<std::mutex> lock(c.mutex);
      // The buffer just freed is the likeliest to be asked for again: make room by dropping the largest idle ones.
      while (c.idle_bytes + cls > buffer_cache_limit()) {
        auto largest = std::prev(c.idle.end());
        evicted.push_back(largest->second);
        c.idle_bytes -= largest->first;
        c.idle.erase(largest);
      }
      c.idle.emplace(cls, p);
      c.idle_bytes += cls;
    }
    for (void* q : evicted) std::free(q);
    return;
  }
  std::free(p);
}

void CachedBytes::reset(size_t bytes) {
  char* p = static_cast<char*>(buffer_alloc(bytes));  // first, so a failure leaves the old contents in place
  buffer_free(data_, size_);
  data_ = p;
  size_ = bytes;
}

void CachedBytes::reset_zeroed(size_t bytes) {
  reset(bytes);
  std::memset(data_, 0, bytes);
}

}  // namespace deepmoe
