#include "model/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace deepmoe {

KvCache::KvCache(int64_t n_layers, int64_t latent_dim, int64_t rope_dim, DType dtype)
    : n_layers_(n_layers), latent_dim_(latent_dim), rope_dim_(rope_dim), dtype_(dtype), layers_(size_t(n_layers)) {
  if (dtype != DType::F32 && dtype != DType::BF16)
    throw Error("KV cache dtype must be F32 or BF16, got " + std::string(dtype_name(dtype)));
}

size_t KvCache::bytes() const {
  size_t total = 0;
  for (const auto& l : layers_) total += l.size();
  return total;
}

void KvCache::reserve(int64_t tokens) {
  if (tokens <= capacity_) return;
  int64_t cap = std::max<int64_t>({tokens, capacity_ * 2, 16});
  const size_t row_bytes = size_t(row_elems()) * dtype_size_bytes(dtype_);
  for (auto& l : layers_) l.resize(size_t(cap) * row_bytes);
  capacity_ = cap;
}

void KvCache::write(int64_t layer, int64_t first, int64_t n, const float* rows) {
  DEEPMOE_CHECK(layer >= 0 && layer < n_layers_ && first >= 0 && first + n <= capacity_, "KvCache::write range");
  const size_t elems = size_t(n * row_elems());
  uint8_t* dst = layers_[size_t(layer)].data() + size_t(first * row_elems()) * dtype_size_bytes(dtype_);
  if (dtype_ == DType::F32)
    std::memcpy(dst, rows, elems * sizeof(float));
  else
    convert_f32_to_bf16(rows, reinterpret_cast<uint16_t*>(dst), elems);
}

const void* KvCache::layer_data(int64_t layer) const {
  DEEPMOE_CHECK(layer >= 0 && layer < n_layers_, "KvCache::layer_data range");
  return layers_[size_t(layer)].data();
}

void KvCache::advance(int64_t n) {
  DEEPMOE_CHECK(n >= 0 && length_ + n <= capacity_, "KvCache::advance past capacity");
  length_ += n;
}

void KvCache::truncate(int64_t n) {
  if (n < 0 || n > length_) throw Error("KV cache truncate to " + std::to_string(n) + " of " + std::to_string(length_));
  length_ = n;
}

}  // namespace deepmoe
