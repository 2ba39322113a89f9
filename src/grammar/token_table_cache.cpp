#include "grammar/token_table_cache.h"

namespace deepmoe::grammar {

namespace {
size_t cost(const std::string& key, const TokenTable& table) { return key.size() + table.bytes(); }
}  // namespace

std::shared_ptr<const TokenTable> TokenTableCache::find(const std::string& key) const {
  std::lock_guard lock(mutex_);
  auto it = index_.find(key);
  if (it == index_.end()) return nullptr;
  recent_.splice(recent_.begin(), recent_, it->second);
  return it->second->second;
}

void TokenTableCache::insert(std::string key, std::shared_ptr<const TokenTable> table) {
  size_t c = cost(key, *table);
  std::lock_guard lock(mutex_);
  if (c > max_bytes_ || index_.count(key)) return;
  while (bytes_ + c > max_bytes_ && !recent_.empty()) {
    const Entry& last = recent_.back();
    bytes_ -= cost(last.first, *last.second);
    index_.erase(last.first);
    recent_.pop_back();
  }
  recent_.emplace_front(std::move(key), std::move(table));
  index_.emplace(recent_.front().first, recent_.begin());
  bytes_ += c;
}

size_t TokenTableCache::size() const {
  std::lock_guard lock(mutex_);
  return index_.size();
}

}  // namespace deepmoe::grammar
