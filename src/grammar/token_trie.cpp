#include "grammar/token_trie.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"

namespace deepmoe::grammar {

TokenTrie::TokenTrie(std::vector<std::string> spellings, int32_t eos_id)
    : spellings_(std::move(spellings)), eos_id_(eos_id) {
  std::vector<int32_t> order;
  for (int32_t id = 0; id < int32_t(spellings_.size()); ++id)
    if (!spellings_[size_t(id)].empty() && id != eos_id_) order.push_back(id);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return spellings_[size_t(a)] < spellings_[size_t(b)]; });
  for (int32_t id : order)
    if (spellings_[size_t(id)].size() > 65535) throw Error("vocabulary: token " + std::to_string(id) + " is too long");
  // Sorted spellings visit the trie in depth-first order: each spelling opens the nodes past its common
  // prefix with the previous one.
  nodes_.push_back({0, 0, 0, 0, 0});
  std::vector<uint32_t> path{0};  // node index per depth
  const std::string* prev = nullptr;
  for (int32_t id : order) {
    const std::string& s = spellings_[size_t(id)];
    size_t common = 0;
    if (prev) {
      size_t limit = std::min(prev->size(), s.size());
      while (common < limit && (*prev)[common] == s[common]) ++common;
    }
    // close nodes deeper than the common prefix
    while (path.size() > common + 1) {
      nodes_[path.back()].subtree_end = uint32_t(nodes_.size());
      path.pop_back();
    }
    for (size_t d = common; d < s.size(); ++d) {
      nodes_.push_back({0, 0, 0, uint16_t(d + 1), uint8_t(s[d])});
      path.push_back(uint32_t(nodes_.size() - 1));
    }
    max_depth_ = std::max(max_depth_, s.size());
    prev = &s;
    token_ids_.push_back(id);
    Node& end = nodes_[path.back()];
    if (end.tokens_end == 0 || end.tokens_end != token_ids_.size() - 1) end.tokens_begin = uint32_t(token_ids_.size() - 1);
    end.tokens_end = uint32_t(token_ids_.size());
  }
  while (!path.empty()) {
    nodes_[path.back()].subtree_end = uint32_t(nodes_.size());
    path.pop_back();
  }
}

}  // namespace deepmoe::grammar
