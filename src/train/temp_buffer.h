// An uninitialized scratch array recycled through core/buffer_cache.h: the trainer's temporaries have the same
// few sizes every step, and fresh zeroed allocations (page faults, memset) cost more than the GEMMs around them.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/buffer_cache.h"

namespace deepmoe {

template <class R>
class TempBuffer {
 public:
  explicit TempBuffer(int64_t n) { bytes_.reset(static_cast<size_t>(n) * sizeof(R)); }
  R* data() { return reinterpret_cast<R*>(bytes_.data()); }
  R& operator[](size_t i) { return data()[i]; }

 private:
  CachedBytes bytes_;
};

}  // namespace deepmoe
