#include "model/kv_block_pool.h"

#include <unistd.h>

#include <algorithm>
#include <limits>
#include <string>

#include "core/buffer_cache.h"
#include "core/error.h"

namespace deepmoe {
namespace {

uint64_t mix64(uint64_t x) {  // splitmix64's finalizer
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

KvBlockPool::KvBlockPool(const KvLayout& layout, int64_t max_blocks, bool prefix_caching)
    : layout_(layout), max_blocks_(max_blocks), prefix_caching_(prefix_caching) {
  if (layout.dtype != DType::F32 && layout.dtype != DType::BF16)
    throw Error("KV cache dtype must be F32 or BF16, got " + std::string(dtype_name(layout.dtype)));
  if (layout.n_layers < 0 || layout.latent_dim < 0 || layout.rope_dim < 0)
    throw Error("KV cache layout: negative layer count or row width");
  if (layout.block_tokens < 1 || layout.block_tokens > (1 << 20))
    throw Error("KV cache block size must be 1 to 1048576 tokens, got " + std::to_string(layout.block_tokens));
  if (max_blocks != kUnbounded && (max_blocks < 0 || max_blocks > std::numeric_limits<KvBlockId>::max()))
    throw Error("KV cache pool size out of range: " + std::to_string(max_blocks) + " blocks");
}

KvBlockPool::~KvBlockPool() {
  for (auto& [data, bytes] : slabs_) buffer_free(data, bytes);
}

int64_t KvBlockPool::blocks_for_budget(const KvLayout& layout, uint64_t budget_bytes) {
  const uint64_t block = layout.block_bytes();
  if (block == 0) return std::numeric_limits<KvBlockId>::max();
  return int64_t(std::min<uint64_t>(budget_bytes / block, uint64_t(std::numeric_limits<KvBlockId>::max())));
}

int64_t KvBlockPool::used_blocks() const {
  std::lock_guard lock(mu_);
  return used_;
}

int64_t KvBlockPool::cached_blocks() const {
  std::lock_guard lock(mu_);
  return int64_t(lru_.size());
}

int64_t KvBlockPool::free_blocks() const {
  std::lock_guard lock(mu_);
  return int64_t(free_.size());
}

int64_t KvBlockPool::available_blocks() const {
  std::lock_guard lock(mu_);
  const int64_t unallocated = max_blocks_ == kUnbounded ? std::numeric_limits<KvBlockId>::max() - int64_t(blocks_.size())
                                                        : max_blocks_ - int64_t(blocks_.size());
  return unallocated + int64_t(free_.size() + lru_.size());
}

uint64_t KvBlockPool::allocated_bytes() const {
  std::lock_guard lock(mu_);
  uint64_t total = 0;
  for (const auto& s : slabs_) total += s.second;
  return total;
}

KvBlockId KvBlockPool::allocate() {
  std::lock_guard lock(mu_);
  return allocate_locked();
}

KvBlockId KvBlockPool::allocate_locked() {
  KvBlockId id = kNoKvBlock;
  if (!free_.empty()) {
    id = free_.back();
    free_.pop_back();
  } else if (max_blocks_ == kUnbounded || int64_t(blocks_.size()) < max_blocks_) {
    // A new slab, as large as what exists (doubling: few slabs, little unused memory), within max_blocks.
    int64_t n = std::max<int64_t>(1, int64_t(blocks_.size()));
    if (max_blocks_ != kUnbounded) n = std::min(n, max_blocks_ - int64_t(blocks_.size()));
    const uint64_t bytes = uint64_t(n) * layout_.block_bytes();
    uint8_t* data = static_cast<uint8_t*>(buffer_alloc(bytes));
    slabs_.emplace_back(data, bytes);
    const KvBlockId first = KvBlockId(blocks_.size());
    for (int64_t i = 0; i < n; ++i) {
      blocks_.emplace_back();
      blocks_.back().data = data + uint64_t(i) * layout_.block_bytes();
    }
    for (int64_t i = n - 1; i >= 1; --i) free_.push_back(KvBlockId(first + i));
    id = first;
  } else if (!lru_.empty()) {
    id = lru_.front();  // the least recently used cached block
    unpublish_locked(blocks_[size_t(id)]);
  } else {
    return kNoKvBlock;
  }
  Block& b = blocks_[size_t(id)];
  b.refs = 1;
  ++used_;
  return id;
}

void KvBlockPool::check_id(KvBlockId b) const {
  DEEPMOE_CHECK(b >= 0 && size_t(b) < blocks_.size(), "KvBlockPool: bad block id");
}

void KvBlockPool::retain(KvBlockId id) {
  std::lock_guard lock(mu_);
  check_id(id);
  Block& b = blocks_[size_t(id)];
  DEEPMOE_CHECK(b.refs > 0, "KvBlockPool::retain of a block nobody holds");
  ++b.refs;
}

void KvBlockPool::release(KvBlockId id) {
  std::lock_guard lock(mu_);
  check_id(id);
  Block& b = blocks_[size_t(id)];
  DEEPMOE_CHECK(b.refs > 0, "KvBlockPool::release of a free block");
  if (--b.refs > 0) return;
  --used_;
  if (b.published) {
    b.lru = lru_.insert(lru_.end(), id);
  } else {
    free_.push_back(id);
  }
}

int32_t KvBlockPool::refcount(KvBlockId id) const {
  std::lock_guard lock(mu_);
  check_id(id);
  return blocks_[size_t(id)].refs;
}

bool KvBlockPool::writable(KvBlockId id) const {
  std::lock_guard lock(mu_);
  check_id(id);
  const Block& b = blocks_[size_t(id)];
  return b.refs == 1 && !b.published;
}

uint8_t* KvBlockPool::layer_rows(KvBlockId id, int64_t layer) const {
  std::lock_guard lock(mu_);
  check_id(id);
  DEEPMOE_CHECK(layer >= 0 && layer < layout_.n_layers, "KvBlockPool::layer_rows layer");
  return blocks_[size_t(id)].data + uint64_t(layer) * layout_.layer_block_bytes();
}

uint64_t KvBlockPool::block_key(uint64_t parent_key, std::span<const int32_t> tokens) {
  uint64_t h = mix64(parent_key ^ 0x2545f4914f6cdd1dull);
  for (int32_t t : tokens) h = mix64(h ^ uint64_t(uint32_t(t)) ^ 0x9e3779b97f4a7c15ull) + 0x632be59bd9b4e019ull;
  return h;
}

KvBlockId KvBlockPool::find(uint64_t key, uint64_t parent_key, std::span<const int32_t> tokens) {
  std::lock_guard lock(mu_);
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return kNoKvBlock;
  Block& b = blocks_[size_t(it->second)];
  if (b.parent_key != parent_key || !std::equal(tokens.begin(), tokens.end(), b.tokens.begin(), b.tokens.end()))
    return kNoKvBlock;  // a hash collision: not this prefix
  if (b.refs == 0) {
    lru_.erase(b.lru);
    ++used_;
  }
  ++b.refs;
  return it->second;
}

bool KvBlockPool::publish(KvBlockId id, uint64_t key, uint64_t parent_key, std::span<const int32_t> tokens) {
  std::lock_guard lock(mu_);
  check_id(id);
  DEEPMOE_CHECK(int64_t(tokens.size()) == layout_.block_tokens, "KvBlockPool::publish of a partial block");
  Block& b = blocks_[size_t(id)];
  DEEPMOE_CHECK(b.refs > 0, "KvBlockPool::publish of a free block");
  if (!prefix_caching_ || b.published || by_key_.count(key)) return false;
  b.published = true;
  b.key = key;
  b.parent_key = parent_key;
  b.tokens.assign(tokens.begin(), tokens.end());
  by_key_.emplace(key, id);
  return true;
}

void KvBlockPool::unpublish(KvBlockId id) {
  std::lock_guard lock(mu_);
  check_id(id);
  Block& b = blocks_[size_t(id)];
  DEEPMOE_CHECK(b.refs > 0, "KvBlockPool::unpublish of a block nobody holds");
  unpublish_locked(b);
}

void KvBlockPool::unpublish_locked(Block& b) {
  if (!b.published) return;
  if (b.refs == 0) lru_.erase(b.lru);
  by_key_.erase(b.key);
  b.published = false;
  b.tokens.clear();
  b.tokens.shrink_to_fit();
}

int64_t KvBlockPool::evict_cached() {
  std::lock_guard lock(mu_);
  int64_t n = 0;
  while (!lru_.empty()) {
    const KvBlockId id = lru_.front();
    unpublish_locked(blocks_[size_t(id)]);
    free_.push_back(id);
    ++n;
  }
  return n;
}

uint64_t physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? uint64_t(pages) * uint64_t(page) : 0;
}

uint64_t default_kv_budget_bytes(uint64_t weight_bytes, uint64_t physical_memory) {
  const uint64_t margin = std::max<uint64_t>(physical_memory / 8, uint64_t(2) << 30);
  const uint64_t taken = weight_bytes + margin;
  return physical_memory > taken ? physical_memory - taken : 0;
}

}  // namespace deepmoe
