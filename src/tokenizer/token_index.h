// Token spelling → id, as an open-addressing table over packed keys: ~3 MB for DeepSeek-V3's 129k spellings
// where std::unordered_map<std::string, int32_t> took ~9 MB in 129k separately allocated nodes — most of the
// tokenizer's load time went to page faults on such fresh memory.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "tokenizer/packed_strings.h"

namespace deepmoe {

class TokenIndex {
 public:
  // Room for n keys without rehashing.
  void reserve(size_t n);
  // Adds key → id unless key is present; returns whether it was added.
  bool insert(std::string_view key, int32_t id);
  // Adds key → id, or points an existing key at id.
  void insert_or_assign(std::string_view key, int32_t id);
  // The id of key, or -1.
  int32_t find(std::string_view key) const;
  size_t size() const { return keys_.size(); }

 private:
  static constexpr uint32_t kEmpty = UINT32_MAX;
  struct Slot {
    uint32_t key = kEmpty;  // index into keys_
    int32_t id = -1;
  };
  // The slot holding key, or the empty slot where it would go.
  size_t locate(std::string_view key) const;
  void rehash(size_t slots);

  PackedStrings keys_;
  std::vector<Slot> slots_;
};

}  // namespace deepmoe
