#include "tokenizer/token_index.h"

#include <functional>

namespace deepmoe {

void TokenIndex::reserve(size_t n) {
  size_t slots = 16;
  while (slots < 2 * n) slots <<= 1;  // load factor at most 1/2: short probe runs
  if (slots > slots_.size()) rehash(slots);
}

size_t TokenIndex::locate(std::string_view key) const {
  const size_t mask = slots_.size() - 1;
  for (size_t h = std::hash<std::string_view>{}(key) & mask;; h = (h + 1) & mask) {
    const Slot& s = slots_[h];
    if (s.key == kEmpty || keys_[s.key] == key) return h;
  }
}

void TokenIndex::rehash(size_t slots) {
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(slots, Slot{});
  for (const Slot& s : old)
    if (s.key != kEmpty) slots_[locate(keys_[s.key])] = s;
}

bool TokenIndex::insert(std::string_view key, int32_t id) {
  if (2 * (keys_.size() + 1) > slots_.size()) reserve(keys_.size() + 1);  // doubles the table
  Slot& s = slots_[locate(key)];
  if (s.key != kEmpty) return false;
  s.key = uint32_t(keys_.size());
  s.id = id;
  keys_.push_back(key);
  return true;
}

void TokenIndex::insert_or_assign(std::string_view key, int32_t id) {
  if (!insert(key, id)) slots_[locate(key)].id = id;
}

int32_t TokenIndex::find(std::string_view key) const {
  if (slots_.empty()) return -1;
  const Slot& s = slots_[locate(key)];
  return s.key == kEmpty ? -1 : s.id;
}

}  // namespace deepmoe
