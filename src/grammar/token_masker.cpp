#include "grammar/token_masker.h"

#include <algorithm>
#include <bit>
#include <cstring>

namespace deepmoe::grammar {

namespace {
constexpr size_t kMaxCachedMasks = 2048;   // 16 KiB each at 129k tokens
// Plain runs are followed at most this many characters deep: proving a run costs a few hundred steps per
// character in a counting state (a string with maxLength), while the rare subtrees of longer plain tokens
// (runs of spaces or dashes) are narrow and cheaper to walk.
constexpr uint32_t kMaxPlainRun = 16;
// Likewise a run is proved for at most this many kinds of characters at once (ASCII, counted as one, and one
// multi-byte shape: a word, a run of CJK): each multi-byte kind adds its partial-character configurations at
// every step of a counting state, and a subtree mixing more kinds (everything after a space) is cheaper to
// split first. ASCII letters and digits are a kind of their own so that a state that takes them but not all of
// ASCII (a URL, an e-mail address) still skips its words.
constexpr int kMaxPlainClasses = 2;
// Configurations whose stacks reach more grammar than this (a whole large schema) are not shared: their key
// would cost more to build and keep than it is likely to save.
constexpr size_t kMaxSharedKeyBytes = 8 * 1024;
// Only tables whose walk visited at least this many trie nodes go to the shared tables: cheaper ones (a number's
// digits, a boolean, most keys' continuations) cost less to rebuild than the memory that would keep them.
constexpr size_t kMinSharedWalk = 1000;
}  // namespace

TokenMasker::TokenMasker(std::shared_ptr<PushdownAutomaton> automaton, std::shared_ptr<const TokenTrie> trie)
    : automaton_(std::move(automaton)), trie_(std::move(trie)) {
  walk_configs_.resize(trie_->max_depth() + 2);
  walk_escaped_.resize(trie_->max_depth() + 2);
}

PushdownAutomaton::ConfigId TokenMasker::plain_successor(PushdownAutomaton::ConfigId config, uint16_t classes) {
  auto memo = plain_next_.find(run_key(config, classes));
  if (memo != plain_next_.end()) return memo->second;
  PushdownAutomaton& a = *automaton_;
  // Walk (configuration, UTF-8 state) pairs over plain bytes: every complete character must reach the same
  // configuration, and no partial one may die.
  struct Item { PushdownAutomaton::ConfigId c; int state; };
  std::vector<Item> todo{{config, 0}}, seen{{config, 0}};
  constexpr PushdownAutomaton::ConfigId kNone = -2;
  PushdownAutomaton::ConfigId target = kNone;
  bool ok = true;
  static constexpr uint8_t kLeadLo[] = {0x00, 0x80, 0x80, 0xA0, 0x80, 0x80, 0x90, 0x80};
  static constexpr uint8_t kLeadHi[] = {0x00, 0xBF, 0xBF, 0xBF, 0x9F, 0xBF, 0xBF, 0x8F};
  static constexpr int kNextAfter[] = {0, 0, 1, 1, 1, 2, 2, 2};
  while (ok && !todo.empty()) {
    Item it = todo.back();
    todo.pop_back();
    auto visit = [&](uint8_t b, int next_state) {
      PushdownAutomaton::ConfigId c = a.step(it.c, b);
      if (c == PushdownAutomaton::kDead) { ok = false; return; }
      if (next_state == 0) {
        if (target == kNone) target = c;
        else if (c != target) ok = false;
        return;
      }
      for (const Item& x : seen)
        if (x.c == c && x.state == next_state) return;
      seen.push_back({c, next_state});
      todo.push_back({c, next_state});
    };
    if (it.state == 0) {
      for (int b = 0x20; b < 0x80 && ok; ++b)
        if (b != '"' && b != '\\' && (classes >> utf8_lead_class(uint8_t(b)) & 1)) visit(uint8_t(b), 0);
      for (int b = 0xC2; b <= 0xF4 && ok; ++b) {
        if (!(classes >> utf8_lead_class(uint8_t(b)) & 1)) continue;
        int s = b <= 0xDF ? 1 : b == 0xE0 ? 3 : b == 0xED ? 4 : b <= 0xEF ? 2 : b == 0xF0 ? 6 : b <= 0xF3 ? 5 : 7;
        visit(uint8_t(b), s);
      }
    } else {
      for (int b = kLeadLo[it.state]; b <= kLeadHi[it.state] && ok; ++b) visit(uint8_t(b), kNextAfter[it.state]);
    }
    if (seen.size() > 64) ok = false;  // not a simple character step
  }
  PushdownAutomaton::ConfigId result = ok && target != kNone ? target : PushdownAutomaton::kDead;
  plain_next_.emplace(run_key(config, classes), result);
  return result;
}

bool TokenMasker::plain_run_at_least(PushdownAutomaton::ConfigId config, uint16_t classes, uint32_t chars) {
  constexpr uint32_t kForever = UINT32_MAX;
  // Follow the chain of plain successors only as far as needed, remembering what it proved: exact lengths
  // where it ended (or looped), lower bounds where the question was answered before its end.
  run_path_.clear();
  PushdownAutomaton::ConfigId cur = config;
  uint32_t total = 0;
  bool exact = false;
  while (true) {
    uint32_t depth = uint32_t(run_path_.size());
    if (depth >= chars) break;
    auto known = plain_run_.find(run_key(cur, classes));
    if (known != plain_run_.end() && (known->second.exact || known->second.chars >= chars - depth)) {
      if (!known->second.exact) return true;  // nothing new learnt
      total = known->second.chars == kForever ? kForever : depth + known->second.chars;
      exact = true;
      break;
    }
    PushdownAutomaton::ConfigId next = plain_successor(cur, classes);
    if (next == PushdownAutomaton::kDead) {
      plain_run_[run_key(cur, classes)] = {0, true};
      total = depth;
      exact = true;
      break;
    }
    run_path_.push_back(cur);
    if (std::find(run_path_.begin(), run_path_.end(), next) != run_path_.end()) {
      total = kForever;  // the chain returns to a configuration on it: plain text of any length survives
      exact = true;
      break;
    }
    cur = next;
  }
  for (size_t j = 0; j < run_path_.size(); ++j) {
    PlainRun& r = plain_run_[run_key(run_path_[j], classes)];
    if (exact) r = {total == kForever ? kForever : total - uint32_t(j), true};
    else r.chars = std::max(r.chars, chars - uint32_t(j));
  }
  return exact ? total >= chars : true;
}

TokenMasker::PositionTable TokenMasker::build_table(PushdownAutomaton::ConfigId cut_config) {
  PositionTable t;
  t.accepted.assign(mask_words(trie_->vocab_size()), 0);
  PushdownAutomaton& a = *automaton_;
  const auto& nodes = trie_->nodes();
  const auto& ids = trie_->token_ids();
  auto accept_subtree = [&](uint32_t i) {
    for (uint32_t j = trie_->subtree_tokens_begin(i), e = trie_->subtree_tokens_begin(nodes[i].subtree_end); j < e; ++j)
      mask_set(t.accepted, ids[j]);
  };
  // Whether plain text of these kinds, up to `chars` characters, survives from `config` whatever it spells.
  auto plain_runs_survive = [&](PushdownAutomaton::ConfigId config, uint16_t classes, uint32_t chars) {
    return chars <= kMaxPlainRun &&
           std::popcount(uint16_t(classes & ~kAsciiClasses)) + (classes & kAsciiClasses ? 1 : 0) <= kMaxPlainClasses &&
           plain_run_at_least(config, classes, chars);
  };
  walk_configs_[0] = cut_config;
  walk_escaped_[0] = uint8_t(a.escaped(cut_config));
  for (uint32_t i = 1; i < nodes.size();) {
    const TokenTrie::Node& n = nodes[i];
    if (trie_->plain_text_below(i) &&
        plain_runs_survive(walk_configs_[n.depth - 1], trie_->plain_classes_below(i), trie_->plain_chars_below(i))) {
      accept_subtree(i);  // plain text no longer than what survives from here: all accepted
      stats_.table_nodes_walked += 1;
      i = n.subtree_end;
      continue;
    }
    ++stats_.table_nodes_walked;
    PushdownAutomaton::ConfigId c = a.step(walk_configs_[n.depth - 1], n.byte);
    if (c == PushdownAutomaton::kDead) {
      // The stacks below the cut may be reached before this byte: the whole subtree needs them.
      if (walk_escaped_[n.depth - 1]) t.uncertain.push_back(i);
      i = n.subtree_end;
      continue;
    }
    if (n.subtree_end > i + 1 && trie_->plain_text_after(i) &&
        plain_runs_survive(c, trie_->plain_classes_after(i), trie_->plain_chars_after(i))) {
      accept_subtree(i);  // this byte is taken, and plain text no longer than what survives after it follows
      i = n.subtree_end;
      continue;
    }
    walk_configs_[n.depth] = c;
    walk_escaped_[n.depth] = walk_escaped_[n.depth - 1] | uint8_t(a.escaped(c));
    for (uint32_t j = n.tokens_begin; j < n.tokens_end; ++j) mask_set(t.accepted, ids[j]);
    ++i;
  }
  return t;
}

const TokenMasker::PositionTable& TokenMasker::table(PushdownAutomaton::ConfigId cut_config) {
  auto it = tables_.find(cut_config);
  if (it != tables_.end()) return *it->second;
  ++stats_.position_tables;
  std::string key;
  if (share_tables_) key = automaton_->structural_key(cut_config, kMaxSharedKeyBytes);
  std::shared_ptr<const PositionTable> t;
  if (!key.empty()) t = trie_->shared_tables().find(key);
  if (t) {
    ++stats_.shared_tables_found;
  } else {
    size_t walked_before = stats_.table_nodes_walked;
    t = std::make_shared<const PositionTable>(build_table(cut_config));
    if (!key.empty() && stats_.table_nodes_walked - walked_before >= kMinSharedWalk)
      trie_->shared_tables().insert(std::move(key), t);
  }
  return *tables_.emplace(cut_config, std::move(t)).first->second;
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

void TokenMasker::check_uncertain(const PositionTable& t, PushdownAutomaton::ConfigId config,
                                  std::span<uint64_t> mask) {
  PushdownAutomaton& a = *automaton_;
  const auto& nodes = trie_->nodes();
  const auto& ids = trie_->token_ids();
  // walk_configs_[d]: the configuration after the first d bytes of the current path (its bytes in path_),
  // valid up to depth `known`; consecutive roots share most of their prefix.
  walk_configs_[0] = config;
  path_.clear();
  for (uint32_t root : t.uncertain) {
    const TokenTrie::Node& r = nodes[root];
    // The root's path: the first r.depth bytes of any token below it.
    const std::string& s = trie_->spelling(ids[trie_->subtree_tokens_begin(root)]);
    size_t same = 0;
    while (same < path_.size() && same + 1 < r.depth && uint8_t(s[same]) == path_[same]) ++same;
    path_.resize(same);
    bool dead = false;
    for (size_t d = same; d + 1 < r.depth; ++d) {
      ++stats_.uncertain_checked;
      PushdownAutomaton::ConfigId c = a.step(walk_configs_[d], uint8_t(s[d]));
      if (c == PushdownAutomaton::kDead) { dead = true; break; }
      walk_configs_[d + 1] = c;
      path_.push_back(uint8_t(s[d]));
    }
    if (dead) continue;
    for (uint32_t i = root, end = r.subtree_end; i < end;) {
      const TokenTrie::Node& n = nodes[i];
      ++stats_.uncertain_checked;
      PushdownAutomaton::ConfigId c = a.step(walk_configs_[n.depth - 1], n.byte);
      if (c == PushdownAutomaton::kDead) { i = n.subtree_end; continue; }
      walk_configs_[n.depth] = c;
      for (uint32_t j = n.tokens_begin; j < n.tokens_end; ++j) mask_set(mask, ids[j]);
      ++i;
    }
  }
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
  // Copy: cutting stacks may add nodes and configurations and move the automaton's storage.
  std::vector<uint32_t> config_nodes = a.nodes(config);
  // Cut every stack at the depth of the shallowest one: the stacks inside a string (characters two
  // frames deeper than the closing quote) then cut to the same stacks in every string of the grammar, and
  // one table serves them all.
  uint32_t min_depth = UINT32_MAX;
  for (uint32_t n : config_nodes)
    if (n > PushdownAutomaton::kEscapeNode) min_depth = std::min(min_depth, a.node_depth(n));
  cut_nodes_.clear();
  for (uint32_t n : config_nodes)
    if (n > PushdownAutomaton::kEscapeNode)
      cut_nodes_.push_back(a.truncated_stack(n, int(std::min<uint32_t>(a.node_depth(n) - min_depth + 1, kMaxContextFrames))));
  if (!cut_nodes_.empty()) {
    const PositionTable& t = table(a.config_of(cut_nodes_));
    for (size_t w = 0; w < mask.size(); ++w) mask[w] |= t.accepted[w];
    check_uncertain(t, config, mask);
  }
  if (trie_->eos_id() >= 0 && a.accepts(config)) mask_set(mask, trie_->eos_id());
  if (cache_.size() >= kMaxCachedMasks) cache_.clear();
  cache_.emplace(config, TokenBitmask(mask.begin(), mask.end()));
}

}  // namespace deepmoe::grammar
