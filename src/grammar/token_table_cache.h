// Token tables shared between grammars. A table (which tokens a cut parser configuration accepts whatever
// lies below the cut, and which depend on it) is a function of the configuration's stacks, the grammar
// they can reach and the vocabulary — not of which schema or request the grammar came from. Requests whose
// schemas share a piece (a string with maxLength, a date, a UUID, an enum) therefore share its tables: the
// cache is keyed by PushdownAutomaton::structural_key and lives with the vocabulary (TokenTrie), so every
// masker over that vocabulary sees it. Thread-safe; bounded in memory (the least recently used tables go
// first; tables in use are also held by their maskers).
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace deepmoe::grammar {

// One bit per token id, 64 ids per word (bit id%64 of word id/64).
using TokenBitmask = std::vector<uint64_t>;

struct TokenTable {
  TokenBitmask accepted;
  // Roots of the trie subtrees whose tokens are uncertain (depth-first order): a mask walks them from the
  // real configuration, skipping a subtree as soon as its prefix dies — inside a fixed-length group (a
  // UUID's hex digits) that is every token starting with a few hex digits, tens of thousands of tokens
  // of which a walk visits a few hundred nodes.
  std::vector<uint32_t> uncertain;

  size_t bytes() const { return accepted.size() * sizeof(uint64_t) + uncertain.size() * sizeof(uint32_t); }
};

class TokenTableCache {
 public:
  explicit TokenTableCache(size_t max_bytes = size_t(16) << 20) : max_bytes_(max_bytes) {}

  std::shared_ptr<const TokenTable> find(const std::string& key) const;
  void insert(std::string key, std::shared_ptr<const TokenTable> table);
  size_t size() const;

 private:
  using Entry = std::pair<std::string, std::shared_ptr<const TokenTable>>;
  mutable std::mutex mutex_;
  mutable std::list<Entry> recent_;  // most recently used first
  std::unordered_map<std::string_view, std::list<Entry>::iterator> index_;  // keys point into recent_
  size_t bytes_ = 0;
  size_t max_bytes_;
};

}  // namespace deepmoe::grammar
