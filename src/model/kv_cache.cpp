#include "model/kv_cache.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include "core/error.h"

namespace deepmoe {

KvCache::KvCache(int64_t n_layers, int64_t latent_dim, int64_t rope_dim, DType dtype, int64_t block_tokens)
    : KvCache(std::make_shared<KvBlockPool>(KvLayout{n_layers, latent_dim, rope_dim, dtype, block_tokens},
                                            KvBlockPool::kUnbounded, /*prefix_caching=*/false)) {}

KvCache::KvCache(std::shared_ptr<KvBlockPool> pool) : pool_(std::move(pool)) {
  DEEPMOE_CHECK(pool_ != nullptr, "KvCache needs a pool");
  layout_ = pool_->layout();
  layer_blocks_.resize(size_t(layout_.n_layers));
}

KvCache::~KvCache() { release_all(); }

KvCache::KvCache(KvCache&& o) noexcept
    : pool_(std::move(o.pool_)),
      layout_(o.layout_),
      length_(std::exchange(o.length_, 0)),
      cached_tokens_(std::exchange(o.cached_tokens_, 0)),
      blocks_(std::move(o.blocks_)),
      layer_blocks_(std::move(o.layer_blocks_)),
      tokens_known_(o.tokens_known_),
      tokens_(std::move(o.tokens_)),
      keys_(std::move(o.keys_)) {
  o.blocks_.clear();
}

KvCache& KvCache::operator=(KvCache&& o) noexcept {
  if (this != &o) {
    release_all();
    pool_ = std::move(o.pool_);
    layout_ = o.layout_;
    length_ = std::exchange(o.length_, 0);
    cached_tokens_ = std::exchange(o.cached_tokens_, 0);
    blocks_ = std::move(o.blocks_);
    o.blocks_.clear();
    layer_blocks_ = std::move(o.layer_blocks_);
    tokens_known_ = o.tokens_known_;
    tokens_ = std::move(o.tokens_);
    keys_ = std::move(o.keys_);
  }
  return *this;
}

void KvCache::release_all() {
  // Last block first: with the prefix cache's LRU, a prefix's later blocks are then evicted before its earlier
  // ones, which more requests share.
  if (pool_)
    for (auto it = blocks_.rbegin(); it != blocks_.rend(); ++it) pool_->release(*it);
  blocks_.clear();
  for (auto& l : layer_blocks_) l.clear();
}

void KvCache::set_block(size_t index, KvBlockId id) {
  if (index == blocks_.size()) {
    blocks_.push_back(id);
    for (int64_t l = 0; l < layout_.n_layers; ++l) layer_blocks_[size_t(l)].push_back(pool_->layer_rows(id, l));
  } else {
    blocks_[index] = id;
    for (int64_t l = 0; l < layout_.n_layers; ++l) layer_blocks_[size_t(l)][index] = pool_->layer_rows(id, l);
  }
}

int64_t KvCache::blocks_needed(int64_t tokens) const {
  const int64_t fresh = std::max<int64_t>(0, layout_.blocks_for(tokens) - held_blocks());
  // The block that takes the next row is shared with another sequence after a truncation: it gets a private copy.
  const size_t next = size_t(length_ / layout_.block_tokens);
  const bool copy = tokens > length_ && next < blocks_.size() && pool_->refcount(blocks_[next]) > 1;
  return fresh + (copy ? 1 : 0);
}

bool KvCache::can_reserve(int64_t tokens) const {
  if (!pool_) return tokens <= 0;
  return pool_->can_allocate(blocks_needed(tokens));
}

bool KvCache::try_reserve(int64_t tokens) {
  if (tokens <= length_ && tokens <= capacity()) return true;
  if (!can_reserve(tokens)) return false;
  const size_t next = size_t(length_ / layout_.block_tokens);
  if (tokens > length_ && next < blocks_.size() && !pool_->writable(blocks_[next])) {
    const KvBlockId old = blocks_[next];
    if (pool_->refcount(old) == 1) {
      pool_->unpublish(old);  // only this sequence holds it: withdraw it from the prefix cache and write on
    } else {
      const KvBlockId copy = pool_->allocate();
      DEEPMOE_CHECK(copy != kNoKvBlock, "KvCache: pool refused a block it said it had");
      const size_t kept_bytes = size_t(length_ % layout_.block_tokens) * layout_.row_bytes();
      for (int64_t l = 0; l < layout_.n_layers; ++l)
        std::memcpy(pool_->layer_rows(copy, l), pool_->layer_rows(old, l), kept_bytes);
      set_block(next, copy);
      pool_->release(old);
    }
  }
  while (capacity() < tokens) {
    const KvBlockId id = pool_->allocate();
    DEEPMOE_CHECK(id != kNoKvBlock, "KvCache: pool refused a block it said it had");
    set_block(blocks_.size(), id);
  }
  return true;
}

void KvCache::reserve(int64_t tokens) {
  if (!pool_) throw Error("KV cache without a pool cannot hold tokens");
  if (try_reserve(tokens)) return;
  throw Error("KV cache full: " + std::to_string(tokens) + " tokens need " + std::to_string(blocks_needed(tokens)) +
              " more blocks of " + std::to_string(layout_.block_tokens) + " tokens, the pool has " +
              std::to_string(pool_->available_blocks()) + " of " + std::to_string(pool_->max_blocks()));
}

void KvCache::write(int64_t layer, int64_t first, int64_t n, const float* rows) {
  DEEPMOE_CHECK(layer >= 0 && layer < layout_.n_layers && first >= 0 && n >= 0 && first + n <= capacity(),
                "KvCache::write range");
  const int64_t bt = layout_.block_tokens, row = layout_.row_elems();
  const size_t elem_bytes = dtype_size_bytes(layout_.dtype);
  for (int64_t t = first; t < first + n;) {
    const int64_t b = t / bt, in_block = t % bt, count = std::min(bt - in_block, first + n - t);
    DEEPMOE_CHECK(pool_->writable(blocks_[size_t(b)]), "KvCache::write into a shared block");
    uint8_t* dst = pool_->layer_rows(blocks_[size_t(b)], layer) + size_t(in_block * row) * elem_bytes;
    const float* src = rows + (t - first) * row;
    const size_t elems = size_t(count * row);
    if (layout_.dtype == DType::F32)
      std::memcpy(dst, src, elems * sizeof(float));
    else
      convert_f32_to_bf16(src, reinterpret_cast<uint16_t*>(dst), elems);
    t += count;
  }
}

CacheRowView KvCache::layer_view(int64_t layer) const {
  DEEPMOE_CHECK(layer >= 0 && layer < layout_.n_layers, "KvCache::layer_view range");
  CacheRowView v;
  v.blocks = layer_blocks_[size_t(layer)].data();
  v.block_rows = layout_.block_tokens;
  v.row = layout_.row_elems();
  v.bf16 = layout_.dtype == DType::BF16;
  return v;
}

void KvCache::advance(int64_t n) {
  DEEPMOE_CHECK(n >= 0 && length_ + n <= capacity(), "KvCache::advance past capacity");
  if (n == 0) return;
  length_ += n;
  // Without the tokens, the blocks from here on cannot be keyed.
  tokens_known_ = false;
  tokens_.clear();
}

void KvCache::advance(std::span<const int32_t> tokens) {
  const int64_t n = int64_t(tokens.size());
  DEEPMOE_CHECK(length_ + n <= capacity(), "KvCache::advance past capacity");
  length_ += n;
  if (!tokens_known_) return;
  tokens_.insert(tokens_.end(), tokens.begin(), tokens.end());
  publish_full_blocks();
}

void KvCache::publish_full_blocks() {
  const int64_t bt = layout_.block_tokens;
  for (int64_t b = int64_t(keys_.size()); (b + 1) * bt <= length_; ++b) {
    const uint64_t parent = b == 0 ? KvBlockPool::kRootKey : keys_[size_t(b - 1)];
    const std::span<const int32_t> toks(tokens_.data() + b * bt, size_t(bt));
    const uint64_t key = KvBlockPool::block_key(parent, toks);
    keys_.push_back(key);
    if (pool_->prefix_caching()) pool_->publish(blocks_[size_t(b)], key, parent, toks);
  }
}

void KvCache::truncate(int64_t n) {
  if (n < 0 || n > length_) throw Error("KV cache truncate to " + std::to_string(n) + " of " + std::to_string(length_));
  length_ = n;
  cached_tokens_ = std::min(cached_tokens_, n);
  if (tokens_known_) tokens_.resize(size_t(n));
  keys_.resize(std::min(keys_.size(), size_t(n / layout_.block_tokens)));
  const size_t keep = size_t(layout_.blocks_for(n));
  while (blocks_.size() > keep) {
    pool_->release(blocks_.back());
    blocks_.pop_back();
    for (auto& l : layer_blocks_) l.pop_back();
  }
}

int64_t KvCache::adopt_prefix(std::span<const int32_t> prompt) {
  DEEPMOE_CHECK(length_ == 0 && blocks_.empty(), "KvCache::adopt_prefix on a cache that holds tokens");
  if (!pool_ || !pool_->prefix_caching() || prompt.empty()) return 0;
  const int64_t bt = layout_.block_tokens, max_blocks = (int64_t(prompt.size()) - 1) / bt;
  uint64_t parent = KvBlockPool::kRootKey;
  for (int64_t b = 0; b < max_blocks; ++b) {
    const std::span<const int32_t> toks = prompt.subspan(size_t(b * bt), size_t(bt));
    const uint64_t key = KvBlockPool::block_key(parent, toks);
    const KvBlockId id = pool_->find(key, parent, toks);
    if (id == kNoKvBlock) break;
    set_block(size_t(b), id);
    keys_.push_back(key);
    parent = key;
  }
  length_ = held_blocks() * bt;
  cached_tokens_ = length_;
  tokens_.assign(prompt.begin(), prompt.begin() + length_);
  return length_;
}

}  // namespace deepmoe
