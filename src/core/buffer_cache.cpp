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

// Up to this size buffers are small: kept per thread (below); larger ones in the shared cache.
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

// Small buffers: a decode forward of a small model takes ~100 of them per call (the activations of a row or a
// few), and through aligned_alloc they cost 15-20% of the forward (memalign's chunk splitting, the consolidation
// of malloc's fast bins before each request of 1 KiB or more, the heap top trimmed and grown back). Each thread
// keeps a stack of idle buffers per 64-byte class instead; a buffer may be freed on another thread than the one
// that took it, and then joins that thread's stacks.
constexpr size_t kSmallClasses = kSmallBytes / 64;
constexpr size_t kSmallIdleBytesPerThread = size_t(4) << 20;  // beyond this, freed outright

struct SmallCache {
  std::vector<void*> idle[kSmallClasses];  // class c holds buffers of (c + 1) · 64 bytes
  size_t idle_bytes = 0;
};

// The thread's cache is reached through a plain pointer, so that a buffer freed after the thread's thread_local
// objects are gone (static destruction on the main thread) finds null and goes straight back to malloc.
thread_local SmallCache* t_small = nullptr;
thread_local bool t_small_closed = false;
struct SmallCacheOwner {
  ~SmallCacheOwner() {
    SmallCache* c = t_small;
    t_small = nullptr;
    t_small_closed = true;
    if (!c) return;
    for (auto& stack : c->idle)
      for (void* p : stack) std::free(p);
    delete c;
  }
};
thread_local SmallCacheOwner t_small_owner;

SmallCache* small_cache() {
  if (!DEEPMOE_BUFFER_CACHE || t_small_closed) return nullptr;
  if (!t_small) {
    (void)&t_small_owner;  // constructs the owner, so the cache is freed when the thread ends
    t_small = new SmallCache;
  }
  return t_small;
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
  if (cls <= kSmallBytes) {
    if (SmallCache* c = small_cache()) {
      std::vector<void*>& stack = c->idle[cls / 64 - 1];
      if (!stack.empty()) {
        void* p = stack.back();
        stack.pop_back();
        c->idle_bytes -= cls;
        return p;
      }
    }
  } else if (DEEPMOE_BUFFER_CACHE) {
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
  if (cls <= kSmallBytes) {
    SmallCache* c = small_cache();
    if (c && c->idle_bytes + cls <= kSmallIdleBytesPerThread) {
      c->idle[cls / 64 - 1].push_back(p);
      c->idle_bytes += cls;
    } else {
      std::free(p);
    }
    return;
  }
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
