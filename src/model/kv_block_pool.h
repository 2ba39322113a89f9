// The memory of the paged latent KV cache: a pool of fixed-size blocks, each holding `block_tokens` cache rows of
// every layer ([n_layers][block_tokens][kv_lora_rank + qk_rope_head_dim] in F32 or BF16), handed to sequences and
// taken back when they end. The pool is bounded by a byte budget (or grows without bound: a sequence's private
// pool), so memory is not reserved for the longest possible request and a full pool refuses instead of growing.
//
// Prefix cache: a full block whose rows belong to a known token prefix can be published under a key that hashes
// its parent block's key and its own tokens (a hash chain, so equal keys mean equal whole prefixes). A new sequence
// with the same prefix takes those blocks instead of recomputing them. Blocks are refcounted; a block no sequence
// holds any more stays cached (least recently used first out) until allocate() needs its memory. A block is
// written only while exactly one sequence holds it and it is not published, so shared blocks never change.
//
// Not tied to a model: the layout is a few numbers (kv_cache.h makes it from a model's config).
#pragma once

#include <cstdint>
#include <list>
#include <mutex>
#include <span>
#include <unordered_map>
#include <vector>

#include "core/dtype.h"

namespace deepmoe {

struct KvLayout {
  int64_t n_layers = 0;
  int64_t latent_dim = 0;    // kv_lora_rank
  int64_t rope_dim = 0;      // qk_rope_head_dim
  DType dtype = DType::F32;  // F32 or BF16
  int64_t block_tokens = 64;

  int64_t row_elems() const { return latent_dim + rope_dim; }
  // One token's row in one layer: (kv_lora_rank + qk_rope_head_dim) × dtype bytes.
  uint64_t row_bytes() const { return uint64_t(row_elems()) * dtype_size_bytes(dtype); }
  uint64_t layer_block_bytes() const { return uint64_t(block_tokens) * row_bytes(); }
  uint64_t block_bytes() const { return uint64_t(n_layers) * layer_block_bytes(); }
  // Blocks that hold `tokens` rows.
  int64_t blocks_for(int64_t tokens) const { return (tokens + block_tokens - 1) / block_tokens; }
};

using KvBlockId = int32_t;
constexpr KvBlockId kNoKvBlock = -1;

class KvBlockPool {
 public:
  static constexpr int64_t kUnbounded = -1;

  // A pool of at most `max_blocks` blocks (kUnbounded: grows as sequences need). Memory is allocated as blocks are
  // first used, in slabs, and kept until the pool is destroyed (blocks never move). A bad layout is an Error.
  KvBlockPool(const KvLayout& layout, int64_t max_blocks, bool prefix_caching = true);
  ~KvBlockPool();
  KvBlockPool(const KvBlockPool&) = delete;
  KvBlockPool& operator=(const KvBlockPool&) = delete;

  // The blocks a byte budget pays for (at least 0).
  static int64_t blocks_for_budget(const KvLayout& layout, uint64_t budget_bytes);

  const KvLayout& layout() const { return layout_; }
  int64_t max_blocks() const { return max_blocks_; }
  bool prefix_caching() const { return prefix_caching_; }

  // Blocks held by sequences.
  int64_t used_blocks() const;
  // Blocks no sequence holds that keep their rows for the prefix cache (allocate() evicts them, oldest first).
  int64_t cached_blocks() const;
  // Blocks whose memory exists and that hold nothing.
  int64_t free_blocks() const;
  // What allocate() can still hand out: free + cached + not yet allocated up to max_blocks (huge when unbounded).
  int64_t available_blocks() const;
  bool can_allocate(int64_t n_blocks) const { return n_blocks <= available_blocks(); }
  // Bytes of block memory allocated so far.
  uint64_t allocated_bytes() const;

  // A block with refcount 1 and unspecified rows, or kNoKvBlock when the pool is full. Takes a free block, else
  // new memory (within max_blocks), else evicts the least recently used cached block.
  KvBlockId allocate();
  void retain(KvBlockId b);
  // Drops one reference; at zero a published block becomes cached (most recently used), any other one free.
  void release(KvBlockId b);
  int32_t refcount(KvBlockId b) const;
  // Written only by the one sequence that holds it, and not while its rows are shared through the prefix cache.
  bool writable(KvBlockId b) const;

  // Rows of `layer` in block b: [block_tokens, row_elems] in the layout's dtype. Stable for the pool's lifetime.
  uint8_t* layer_rows(KvBlockId b, int64_t layer) const;

  // Prefix cache. The key of a full block of `tokens` (block_tokens ids) whose previous block had key
  // `parent_key` (kRootKey for the first block).
  static constexpr uint64_t kRootKey = 0x9e3779b97f4a7c15ull;
  static uint64_t block_key(uint64_t parent_key, std::span<const int32_t> tokens);
  // The cached block with this key, parent key and tokens, retained for the caller; kNoKvBlock when there is none.
  KvBlockId find(uint64_t key, uint64_t parent_key, std::span<const int32_t> tokens);
  // Publishes full block b (held by the caller) under key; false when the key already has a block (the caller's
  // block stays private) or the pool does not cache prefixes.
  bool publish(KvBlockId b, uint64_t key, uint64_t parent_key, std::span<const int32_t> tokens);
  // Withdraws b from the prefix cache (its holder will write it again, after a truncation).
  void unpublish(KvBlockId b);
  // Frees every cached block (for memory pressure and tests); returns how many.
  int64_t evict_cached();

 private:
  struct Block {
    uint8_t* data = nullptr;
    int32_t refs = 0;
    bool published = false;
    uint64_t key = 0, parent_key = 0;
    std::vector<int32_t> tokens;      // the block's tokens while published (checked on find: no false hit)
    std::list<KvBlockId>::iterator lru;  // position in lru_ while cached
  };

  KvBlockId allocate_locked();
  void unpublish_locked(Block& b);
  void check_id(KvBlockId b) const;

  KvLayout layout_;
  int64_t max_blocks_;
  bool prefix_caching_;
  mutable std::mutex mu_;
  std::vector<Block> blocks_;
  std::vector<std::pair<uint8_t*, uint64_t>> slabs_;  // memory, bytes
  std::vector<KvBlockId> free_;
  std::list<KvBlockId> lru_;  // cached blocks, least recently used first
  std::unordered_map<uint64_t, KvBlockId> by_key_;
  int64_t used_ = 0;
};

// The KV budget when none is given: physical memory minus the weights, minus a margin for activations, the
// tokenizer and everything else (an eighth of memory, at least 2 GiB); 0 when nothing is left.
uint64_t default_kv_budget_bytes(uint64_t weight_bytes, uint64_t physical_memory_bytes);
// This machine's physical memory (sysconf).
uint64_t physical_memory_bytes();

}  // namespace deepmoe
