#include "grammar/token_table_cache.h"

namespace deepmoe::grammar {

std::shared_ptr<const TokenTable> TokenTableCache::find(const std::string& key) const {
  std::lock_guard lock(mutex_);
  auto it = tables_.find(key);
  return it == tables_.end() ? nullptr : it->second;
}

void TokenTableCache::insert(std::string key, std::shared_ptr<const TokenTable> table) {
  size_t cost = key.size() + table->bytes();
  std::lock_guard lock(mutex_);
  if (cost > max_bytes_) return;
  if (bytes_ + cost > max_bytes_) {
    tables_.clear();
    bytes_ = 0;
  }
  if (tables_.emplace(std::move(key), std::move(table)).second) bytes_ += cost;
}

size_t TokenTableCache::size() const {
  std::lock_guard lock(mutex_);
  return tables_.size();
}

}  // namespace deepmoe::grammar
