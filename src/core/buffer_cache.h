// Recycled buffers for activations. A forward pass allocates the same few sizes every layer and every call;
// fresh large allocations come from mmap, so each one page-faults in and is zeroed by the kernel, which cost ~15%
// of a prefill, and small ones through malloc's aligned path cost 15-20% of a decode forward on a small model.
// Freed buffers are kept here, by size, and handed out again: large ones (over 64 KiB) in one shared cache,
// small ones per thread (at most 4 MiB idle per thread). Thread-safe.
#pragma once

#include <cstddef>
#include <utility>

namespace deepmoe {

// 64-byte aligned, uninitialized, at least `bytes` long (0 is allowed). Throws deepmoe::Error when out of memory.
void* buffer_alloc(size_t bytes);
// Gives back a buffer from buffer_alloc(bytes), with the same `bytes`. Kept for reuse; when that would take the
// cache past buffer_cache_limit(), the largest idle buffers are freed to make room.
void buffer_free(void* p, size_t bytes);

// The most bytes the cache keeps idle: a sixteenth of physical memory, at least 256 MiB.
size_t buffer_cache_limit();
// Bytes held idle in the shared cache of large buffers now (for tests and diagnostics).
size_t buffer_cache_idle_bytes();
// False in AddressSanitizer builds, where every buffer goes straight back to the allocator so that a use after
// free is still caught.
bool buffer_cache_enabled();

// A byte array from buffer_alloc (e.g. a message buffer). Contents are unspecified unless it was zeroed.
class CachedBytes {
 public:
  CachedBytes() = default;
  ~CachedBytes() { buffer_free(data_, size_); }
  CachedBytes(CachedBytes&& o) noexcept : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  CachedBytes& operator=(CachedBytes&& o) noexcept {
    if (this != &o) {
      buffer_free(data_, size_);
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  CachedBytes(const CachedBytes&) = delete;
  CachedBytes& operator=(const CachedBytes&) = delete;

  // Replaces the contents with `bytes` uninitialized bytes (or zeros).
  void reset(size_t bytes);
  void reset_zeroed(size_t bytes);
  char* data() { return data_; }
  const char* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  char* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace deepmoe
