#include "grammar/token_trie.h"

#include <algorithm>
#include <array>
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
      first_token_.resize(nodes_.size(), uint32_t(token_ids_.size()));
      first_token_.back() = uint32_t(token_ids_.size());
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
  first_token_.resize(nodes_.size(), 0);
  first_token_[0] = 0;
  compute_plain_below();
}

int utf8_lead_class(uint8_t b) {
  if ((b >= '0' && b <= '9') || (b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z')) return 9;
  if (b < 0x80) return 0;
  if (b < 0xC2) return -1;
  if (b <= 0xDF) return 1;
  if (b == 0xE0) return 2;
  if (b <= 0xEC) return 3;
  if (b == 0xED) return 4;
  if (b <= 0xEF) return 5;
  if (b == 0xF0) return 6;
  if (b <= 0xF3) return 7;
  if (b == 0xF4) return 8;
  return -1;
}

namespace {
// UTF-8 validity as a small automaton: 0 = at a character boundary; others = continuation bytes pending,
// with the first one restricted for E0 / ED / F0 / F4 (no overlongs, surrogates or values past U+10FFFF).
constexpr int kUtf8States = 8;
int utf8_next(int state, uint8_t b) {
  bool cont = b >= 0x80 && b <= 0xBF;
  switch (state) {
    case 0:
      if (b < 0x80) return 0;
      if (b >= 0xC2 && b <= 0xDF) return 1;
      if (b == 0xE0) return 3;
      if (b == 0xED) return 4;
      if (b >= 0xE1 && b <= 0xEF) return 2;
      if (b == 0xF0) return 6;
      if (b >= 0xF1 && b <= 0xF3) return 5;
      if (b == 0xF4) return 7;
      return -1;
    case 1: return cont ? 0 : -1;
    case 2: return cont ? 1 : -1;
    case 3: return b >= 0xA0 && b <= 0xBF ? 1 : -1;
    case 4: return b >= 0x80 && b <= 0x9F ? 1 : -1;
    case 5: return cont ? 2 : -1;
    case 6: return b >= 0x90 && b <= 0xBF ? 2 : -1;
    case 7: return b >= 0x80 && b <= 0x8F ? 2 : -1;
  }
  return -1;
}
bool plain_byte(uint8_t b) { return b >= 0x20 && b != '"' && b != '\\'; }
}  // namespace

void TokenTrie::compute_plain_below() {
  // ok[i][s]: every token below node i is plain text when node i's byte is read in UTF-8 state s. Children
  // follow their parent in the array, so one backward pass sees every child first.
  std::vector<std::array<uint8_t, kUtf8States>> ok(nodes_.size());
  for (size_t i = nodes_.size(); i-- > 1;) {
    const Node& n = nodes_[i];
    for (int s = 0; s < kUtf8States; ++s) {
      int next = plain_byte(n.byte) ? utf8_next(s, n.byte) : -1;
      bool good = next >= 0;
      for (uint32_t c = uint32_t(i) + 1; good && c < n.subtree_end; c = nodes_[c].subtree_end) good = ok[c][size_t(next)];
      ok[i][size_t(s)] = good;
    }
  }
  plain_below_.assign(nodes_.size(), 0);
  for (size_t i = 1; i < nodes_.size(); ++i) plain_below_[i] = ok[i][0];
  // Characters begun below a node = its lead (non-continuation) bytes; within valid UTF-8 from a character
  // boundary that is the complete characters plus a cut-short last one.
  plain_chars_.assign(nodes_.size(), 0);
  plain_classes_.assign(nodes_.size(), 0);
  for (size_t i = nodes_.size(); i-- > 1;) {
    const Node& n = nodes_[i];
    uint32_t deepest = 0;
    uint16_t classes = 0;
    for (uint32_t c = uint32_t(i) + 1; c < n.subtree_end; c = nodes_[c].subtree_end) {
      deepest = std::max<uint32_t>(deepest, plain_chars_[c]);
      classes |= plain_classes_[c];
    }
    int lead = utf8_lead_class(n.byte);
    if (lead >= 0) classes |= uint16_t(1u << lead);
    plain_classes_[i] = classes;
    plain_chars_[i] = uint16_t(std::min<uint32_t>(deepest + ((n.byte & 0xC0) != 0x80), 65535));
  }
  plain_after_.assign(nodes_.size(), 0);
  plain_chars_after_.assign(nodes_.size(), 0);
  plain_classes_after_.assign(nodes_.size(), 0);
  for (size_t i = 1; i < nodes_.size(); ++i) {
    const Node& n = nodes_[i];
    bool all = true;
    uint32_t deepest = 0;
    uint16_t classes = 0;
    for (uint32_t c = uint32_t(i) + 1; c < n.subtree_end; c = nodes_[c].subtree_end) {
      all = all && ok[c][0];
      deepest = std::max<uint32_t>(deepest, plain_chars_[c]);
      classes |= plain_classes_[c];
    }
    plain_after_[i] = all;
    plain_chars_after_[i] = uint16_t(deepest);
    plain_classes_after_[i] = classes;
  }
}

}  // namespace deepmoe::grammar
