#include "runtime/hidden_prefix_cache.h"

#include <algorithm>

#include "core/error.h"
#include "model/kv_block_pool.h"

namespace deepmoe {

HiddenPrefixCache::HiddenPrefixCache(int64_t block_tokens, int64_t hidden_size, int64_t max_tokens)
    : block_tokens_(block_tokens), hidden_size_(hidden_size), max_blocks_(max_tokens / std::max<int64_t>(block_tokens, 1)) {
  DEEPMOE_CHECK(block_tokens >= 1 && hidden_size >= 1);
}

int64_t HiddenPrefixCache::stored_blocks() const {
  std::lock_guard lock(mu_);
  return int64_t(blocks_.size());
}

int64_t HiddenPrefixCache::lookup(std::span<const int32_t> tokens, std::vector<float>& hidden) {
  std::lock_guard lock(mu_);
  const int64_t n = int64_t(tokens.size()) / block_tokens_;
  uint64_t parent = KvBlockPool::kRootKey;
  for (int64_t b = 0; b < n; ++b) {
    const auto toks = tokens.subspan(size_t(b * block_tokens_), size_t(block_tokens_));
    const uint64_t key = KvBlockPool::block_key(parent, toks);
    const auto it = blocks_.find(key);
    if (it == blocks_.end() || it->second.parent_key != parent || !std::equal(toks.begin(), toks.end(), it->second.tokens.begin()))
      return b;
    hidden.insert(hidden.end(), it->second.hidden.begin(), it->second.hidden.end());
    lru_.splice(lru_.end(), lru_, it->second.lru);
    parent = key;
  }
  return n;
}

void HiddenPrefixCache::publish(std::span<const int32_t> tokens, std::span<const float> hidden, int64_t first_block) {
  const int64_t n = int64_t(tokens.size()) / block_tokens_;
  DEEPMOE_CHECK(int64_t(hidden.size()) >= n * block_tokens_ * hidden_size_, "hidden states of every token");
  if (max_blocks_ <= 0 || first_block >= n) return;
  std::lock_guard lock(mu_);
  uint64_t parent = KvBlockPool::kRootKey;
  for (int64_t b = 0; b < n; ++b) {
    const auto toks = tokens.subspan(size_t(b * block_tokens_), size_t(block_tokens_));
    const uint64_t key = KvBlockPool::block_key(parent, toks);
    if (b >= first_block && !blocks_.count(key)) {
      while (int64_t(blocks_.size()) >= max_blocks_) {
        blocks_.erase(lru_.front());
        lru_.pop_front();
      }
      Block block;
      block.parent_key = parent;
      block.tokens.assign(toks.begin(), toks.end());
      const auto rows = hidden.subspan(size_t(b * block_tokens_ * hidden_size_), size_t(block_tokens_ * hidden_size_));
      block.hidden.assign(rows.begin(), rows.end());
      block.lru = lru_.insert(lru_.end(), key);
      blocks_.emplace(key, std::move(block));
    }
    parent = key;
  }
}

}  // namespace deepmoe
