// The per-sequence KV cache of MLA (reference §1.5, absorbed form): for every layer and every token, one row of
// [kv_lora_rank normalized latent c_KV | qk_rope_head_dim roped shared key k_pe] — 576 values for V3 — in FP32
// or BF16. Both attention forms read this same cache (the naive form decompresses K/V from the latent on each
// call), so a sequence can switch forms and the cache is never larger than the absorbed one.
//
// Layout: contiguous per layer, [capacity, row] with capacity growing by doubling (amortized O(1) append, one
// copy per doubling). A simple contiguous cache keeps attention a single strided loop; a paged cache can replace
// it behind this interface when the scheduler needs to share memory between sequences.
#pragma once

#include <cstdint>
#include <vector>

#include "core/dtype.h"

namespace deepmoe {

class KvCache {
 public:
  KvCache() = default;
  KvCache(int64_t n_layers, int64_t latent_dim, int64_t rope_dim, DType dtype);

  int64_t n_layers() const { return n_layers_; }
  int64_t latent_dim() const { return latent_dim_; }
  int64_t rope_dim() const { return rope_dim_; }
  int64_t row_elems() const { return latent_dim_ + rope_dim_; }
  DType dtype() const { return dtype_; }
  // Tokens whose rows are complete in every layer; the next token gets this position.
  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  size_t bytes() const;

  // Makes room for `tokens` rows per layer (keeps the content).
  void reserve(int64_t tokens);
  // Stores rows[n, latent_dim + rope_dim] (FP32) for positions [first, first + n) of `layer`, converting to the
  // cache dtype. Needs first + n <= capacity().
  void write(int64_t layer, int64_t first, int64_t n, const float* rows);
  // The start of a layer's rows ([capacity, row_elems] in dtype()).
  const void* layer_data(int64_t layer) const;
  // Marks positions [length, length + n) complete (after every layer wrote them).
  void advance(int64_t n);
  // Forgets positions >= n (speculative decoding rollback); n <= length().
  void truncate(int64_t n);

 private:
  int64_t n_layers_ = 0, latent_dim_ = 0, rope_dim_ = 0;
  DType dtype_ = DType::F32;
  int64_t length_ = 0, capacity_ = 0;
  std::vector<std::vector<uint8_t>> layers_;
};

// One sequence's state in the model: the main layers' cache and the MTP layer's cache (which fills at its own
// pace, one position behind the main model, since MTP at position i needs token i+1).
struct Sequence {
  KvCache main;
  KvCache mtp;
  int64_t length() const { return main.length(); }
};

}  // namespace deepmoe
