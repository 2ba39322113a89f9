// The per-sequence KV cache of MLA (reference §1.5, absorbed form): for every layer and every token, one row of
// [kv_lora_rank normalized latent c_KV | qk_rope_head_dim roped shared key k_pe] — 576 values for V3 — in FP32
// or BF16. Both attention forms read this same cache (the naive form decompresses K/V from the latent on each
// call), so a sequence can switch forms and the cache is never larger than the absorbed one.
//
// Paged: the rows live in fixed-size blocks of a KvBlockPool (kv_block_pool.h), found through this sequence's block
// table, so a sequence grows without copying, gives whole blocks back when it is truncated or ends, and can start
// from blocks another sequence computed for the same token prefix (adopt_prefix). A cache made without a pool gets
// a private one that grows as needed. The attention kernels read the rows through layer_view() (block addresses +
// rows per block), with the same bits as from one contiguous array.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "core/dtype.h"
#include "kernels/attention.h"
#include "model/kv_block_pool.h"

namespace deepmoe {

class KvCache {
 public:
  KvCache() = default;
  // A cache with a private pool that grows as needed (no budget, no prefix sharing).
  KvCache(int64_t n_layers, int64_t latent_dim, int64_t rope_dim, DType dtype, int64_t block_tokens = 64);
  // A cache whose blocks come from `pool` (shared with other sequences).
  explicit KvCache(std::shared_ptr<KvBlockPool> pool);
  ~KvCache();
  KvCache(KvCache&& other) noexcept;
  KvCache& operator=(KvCache&& other) noexcept;
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  int64_t n_layers() const { return layout_.n_layers; }
  int64_t latent_dim() const { return layout_.latent_dim; }
  int64_t rope_dim() const { return layout_.rope_dim; }
  int64_t row_elems() const { return layout_.row_elems(); }
  DType dtype() const { return layout_.dtype; }
  int64_t block_tokens() const { return layout_.block_tokens; }
  const KvLayout& layout() const { return layout_; }
  KvBlockPool* pool() const { return pool_.get(); }
  // Tokens whose rows are complete in every layer; the next token gets this position.
  int64_t length() const { return length_; }
  // Tokens the held blocks have room for.
  int64_t capacity() const { return int64_t(blocks_.size()) * layout_.block_tokens; }
  int64_t held_blocks() const { return int64_t(blocks_.size()); }
  // Bytes of the blocks this sequence holds (shared blocks counted in full).
  size_t bytes() const { return size_t(blocks_.size()) * size_t(layout_.block_bytes()); }
  // Tokens taken from the prefix cache by adopt_prefix() (not computed by this sequence).
  int64_t cached_tokens() const { return cached_tokens_; }

  // Blocks reserve(tokens) would take from the pool (new blocks, plus a private copy of a shared last block).
  int64_t blocks_needed(int64_t tokens) const;
  // Whether the pool can give this sequence room for `tokens` rows now.
  bool can_reserve(int64_t tokens) const;
  // Makes room for `tokens` rows per layer (keeps the content); false, with nothing changed, when the pool has
  // not enough blocks.
  bool try_reserve(int64_t tokens);
  // The same, with an Error naming the numbers when the pool is full.
  void reserve(int64_t tokens);

  // Stores rows[n, latent_dim + rope_dim] (FP32) for positions [first, first + n) of `layer`, converting to the
  // cache dtype. Needs first + n <= capacity() and first >= the shared prefix.
  void write(int64_t layer, int64_t first, int64_t n, const float* rows);
  // The rows of `layer` as the attention kernels read them (valid until the next reserve or truncate).
  CacheRowView layer_view(int64_t layer) const;
  // Marks positions [length, length + n) complete (after every layer wrote them).
  void advance(int64_t n);
  // The same, for the tokens at those positions: full blocks are published in the pool's prefix cache.
  void advance(std::span<const int32_t> tokens);
  // Forgets positions >= n (speculative decoding rollback); n <= length(). Blocks wholly past n go back to the
  // pool; the block holding position n − 1 is kept (copied on the next reserve if another sequence shares it).
  void truncate(int64_t n);

  // On an empty cache: takes the longest run of full blocks of `prompt` that the pool's prefix cache holds, at
  // most prompt.size() − 1 tokens (the last prompt token is always computed, for its logits). Returns the tokens
  // taken (a multiple of block_tokens); the caller runs the forward pass on prompt[returned:].
  int64_t adopt_prefix(std::span<const int32_t> prompt);

 private:
  void release_all();
  void set_block(size_t index, KvBlockId id);
  void publish_full_blocks();

  std::shared_ptr<KvBlockPool> pool_;
  KvLayout layout_;
  int64_t length_ = 0, cached_tokens_ = 0;
  std::vector<KvBlockId> blocks_;
  std::vector<std::vector<const void*>> layer_blocks_;  // [layer][block] row addresses for the kernels
  // Prefix keys: tokens_ holds every position's token while all are known (advance with tokens); keys_ the chain
  // key of each published-or-publishable full block.
  bool tokens_known_ = true;
  std::vector<int32_t> tokens_;
  std::vector<uint64_t> keys_;
};

// One sequence's state in the model: the main layers' cache and the MTP layer's cache (which fills at its own
// pace, one position behind the main model, since MTP at position i needs token i+1).
struct Sequence {
  KvCache main;
  KvCache mtp;
  int64_t length() const { return main.length(); }
  // Prompt tokens taken from the prefix cache instead of computed.
  int64_t cached_tokens() const { return main.cached_tokens(); }
};

// The pools a model's sequences draw from: one for the main layers, one for the MTP layer (null without MTP).
struct KvPools {
  std::shared_ptr<KvBlockPool> main, mtp;
};

}  // namespace deepmoe
