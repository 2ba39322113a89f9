#include "runtime/token_healing.h"

#include <algorithm>

namespace deepmoe {
namespace {

// Whether some token's spelling starts with `bytes` and is longer: a walk down the trie along `bytes`.
bool longer_token_exists(const grammar::TokenTrie& trie, const std::string& bytes) {
  const auto& nodes = trie.nodes();
  uint32_t node = 0;
  for (const char ch : bytes) {
    uint32_t child = node + 1;
    bool found = false;
    while (child < nodes[node].subtree_end) {
      if (nodes[child].byte == static_cast<uint8_t>(ch)) {
        found = true;
        break;
      }
      child = nodes[child].subtree_end;
    }
    if (!found) return false;
    node = child;
  }
  // Anything below the node spells a longer token (nodes exist only on the way to some token).
  return nodes[node].subtree_end > node + 1;
}

}  // namespace

HealedPrompt heal_prompt(std::span<const int32_t> prompt, const grammar::TokenTrie& vocabulary, size_t max_tokens,
                         size_t max_bytes) {
  HealedPrompt out;
  out.tokens.assign(prompt.begin(), prompt.end());
  std::string bytes;
  size_t best = 0;
  std::string best_bytes;
  for (size_t k = 1; k <= max_tokens && k < prompt.size(); ++k) {
    const int32_t id = prompt[prompt.size() - k];
    if (id < 0 || id >= vocabulary.vocab_size() || vocabulary.spelling(id).empty()) break;  // special or unknown
    bytes = vocabulary.spelling(id) + bytes;
    if (longer_token_exists(vocabulary, bytes)) {
      best = k;
      best_bytes = bytes;
    }
    if (bytes.size() >= max_bytes) break;
  }
  if (best > 0) {
    out.tokens.resize(prompt.size() - best);
    out.removed = std::move(best_bytes);
  }
  return out;
}

grammar::Grammar prefixed_grammar(const std::string& prefix, const grammar::Grammar* rest) {
  grammar::Grammar g;
  if (rest) g = *rest;
  auto byte_set = [&](const grammar::ByteSet& set) {
    for (uint32_t i = 0; i < g.byte_sets.size(); ++i)
      if (g.byte_sets[i] == set) return grammar::Symbol::bytes(i);
    g.byte_sets.push_back(set);
    return grammar::Symbol::bytes(uint32_t(g.byte_sets.size() - 1));
  };
  grammar::Sequence seq;
  for (const char ch : prefix) seq.push_back(byte_set(grammar::ByteSet::single(uint8_t(ch))));
  if (rest) {
    seq.push_back(grammar::Symbol::rule(g.root));
  } else {
    // any ::= [\x00-\xff] any | ""
    const uint32_t any = uint32_t(g.rules.size());
    g.rules.push_back({"any-bytes", {}});
    g.rules[any].alternatives = {{byte_set(grammar::ByteSet::range(0, 255)), grammar::Symbol::rule(any)}, {}};
    seq.push_back(grammar::Symbol::rule(any));
  }
  g.rules.push_back({"healed", {std::move(seq)}});
  g.root = uint32_t(g.rules.size() - 1);
  return g;
}

}  // namespace deepmoe
