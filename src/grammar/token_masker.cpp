#include "grammar/token_masker.h"

#include <algorithm>
#include <cstring>

namespace deepmoe::grammar {

namespace {
constexpr size_t kBitsetThreshold = 2048;  // accepted sets larger than this are kept as bitmasks
constexpr size_t kMaxCachedMasks = 2048;   // 16 KiB each at 129k tokens
}  // namespace

TokenMasker::TokenMasker(std::shared_ptr<PushdownAutomaton> automaton, std::shared_ptr<const TokenTrie> trie)
    : automaton_(std::move(automaton)), trie_(std::move(trie)) {
  walk_configs_.resize(trie_->max_depth() + 2);
  walk_escaped_.resize(trie_->max_depth() + 2);
}

TokenMasker::PositionTable TokenMasker::build_table(uint32_t truncated_node) {
  PositionTable t;
  PushdownAutomaton& a = *automaton_;
  const auto& nodes = trie_->nodes();
  const auto& ids = trie_->token_ids();
  walk_configs_[0] = a.single(truncated_node);
  walk_escaped_[0] = 0;
  for (uint32_t i = 1; i < nodes.size();) {
    const TokenTrie::Node& n = nodes[i];
    PushdownAutomaton::ConfigId c = a.step(walk_configs_[n.depth - 1], n.byte);
    if (c == PushdownAutomaton::kDead) {
      // The rule below may end before this byte: the whole subtree needs the real stack.
      if (walk_escaped_[n.depth - 1])
        for (uint32_t k = i; k < n.subtree_end; ++k)
          for (uint32_t j = nodes[k].tokens_begin; j < nodes[k].tokens_end; ++j) t.uncertain.push_back(ids[j]);
      i = n.subtree_end;
      continue;
    }
    walk_configs_[n.depth] = c;
    walk_escaped_[n.depth] = walk_escaped_[n.depth - 1] | uint8_t(a.escaped(c));
    for (uint32_t j = n.tokens_begin; j < n.tokens_end; ++j) t.accepted.push_back(ids[j]);
    ++i;
  }
  if (t.accepted.size() > kBitsetThreshold) {
    t.accepted_bits.assign(mask_words(trie_->vocab_size()), 0);
    for (int32_t id : t.accepted) mask_set(t.accepted_bits, id);
    t.accepted.clear();
    t.accepted.shrink_to_fit();
  }
  std::sort(t.uncertain.begin(), t.uncertain.end());
  return t;
}

const TokenMasker::PositionTable& TokenMasker::table(uint32_t pos) {
  auto it = tables_.find(pos);
  if (it != tables_.end()) return *it->second;
  auto t = std::make_unique<PositionTable>(build_table(pos));
  ++stats_.position_tables;
  return *tables_.emplace(pos, std::move(t)).first->second;
}

PushdownAutomaton::ConfigId TokenMasker::advance(PushdownAutomaton::ConfigId config, int32_t id) {
  const std::string& s = trie_->spelling(id);
  if (s.empty()) return PushdownAutomaton::kDead;
  for (char ch : s) {
    config = automaton_->step(config, uint8_t(ch));
    if (config == PushdownAutomaton::kDead) break;
  }
  return config;
}

bool TokenMasker::token_allowed(PushdownAutomaton::ConfigId config, int32_t id) {
  if (config == PushdownAutomaton::kDead || id < 0 || id >= trie_->vocab_size()) return false;
  if (id == trie_->eos_id()) return automaton_->accepts(config);
  return advance(config, id) != PushdownAutomaton::kDead;
}

void TokenMasker::fill_mask(PushdownAutomaton::ConfigId config, std::span<uint64_t> mask) {
  ++stats_.masks;
  std::fill(mask.begin(), mask.end(), 0);
  if (config == PushdownAutomaton::kDead) return;
  auto cached = cache_.find(config);
  if (cached != cache_.end()) {
    ++stats_.cache_hits;
    std::memcpy(mask.data(), cached->second.data(), mask.size() * sizeof(uint64_t));
    return;
  }
  PushdownAutomaton& a = *automaton_;
  seen_positions_.clear();
  std::vector<const PositionTable*> tables;
  // Copy: table() may add configurations and move the automaton's storage.
  std::vector<uint32_t> config_nodes = a.nodes(config);
  for (uint32_t n : config_nodes) {
    if (n <= PushdownAutomaton::kEscapeNode) continue;
    uint32_t key = a.truncated_stack(n, kContextFrames);
    if (std::find(seen_positions_.begin(), seen_positions_.end(), key) != seen_positions_.end()) continue;
    seen_positions_.push_back(key);
    tables.push_back(&table(key));
  }
  for (const PositionTable* t : tables) {
    if (!t->accepted_bits.empty()) {
      for (size_t w = 0; w < mask.size(); ++w) mask[w] |= t->accepted_bits[w];
    } else {
      for (int32_t id : t->accepted) mask_set(mask, id);
    }
  }
  for (const PositionTable* t : tables) {
    for (int32_t id : t->uncertain) {
      if (mask_test(mask, id)) continue;
      ++stats_.uncertain_checked;
      if (advance(config, id) != PushdownAutomaton::kDead) mask_set(mask, id);
    }
  }
  if (trie_->eos_id() >= 0 && a.accepts(config)) mask_set(mask, trie_->eos_id());
  if (cache_.size() >= kMaxCachedMasks) cache_.clear();
  cache_.emplace(config, TokenBitmask(mask.begin(), mask.end()));
}

}  // namespace deepmoe::grammar
