// Token masks: which vocabulary entries may come next in a parser configuration.
//
// For each configuration it meets, with every stack cut at the depth of the shallowest stack, the
// masker precomputes once, by walking the token trie from those cut stacks alone (the frames below unknown): the tokens it accepts whatever lies
// below (accepted), and the tokens whose fate depends on the frames below because the cut can be popped
// inside them (uncertain). Everything else is rejected. Cuts recur across the grammar (every string value
// shares the string rule's frames), so tables are few. A mask is then the OR of the accepted sets of the configuration's positions
// plus a run-time check of the uncertain tokens only — inside a JSON string that is the few thousand
// tokens holding a quote or a control byte instead of all 129k. Masks are also cached per configuration,
// which recurs (every character of a string, every element of an array has the same one).
//
// EOS is allowed exactly when the grammar accepts; tokens with no spelling (special, padding) never are.
// Not thread-safe: one masker per automaton.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "grammar/pushdown_automaton.h"
#include "grammar/token_table_cache.h"
#include "grammar/token_trie.h"

namespace deepmoe::grammar {


inline bool mask_test(std::span<const uint64_t> mask, int32_t id) { return (mask[size_t(id) >> 6] >> (id & 63)) & 1; }
inline void mask_set(std::span<uint64_t> mask, int32_t id) { mask[size_t(id) >> 6] |= uint64_t(1) << (id & 63); }
inline size_t mask_words(int32_t vocab_size) { return (size_t(vocab_size) + 63) / 64; }

struct MaskStats {
  size_t masks = 0;
  size_t cache_hits = 0;
  size_t position_tables = 0;     // tables this masker needed (built or found shared)
  size_t shared_tables_found = 0;  // of those, found in the vocabulary's shared tables
  size_t uncertain_checked = 0;  // trie nodes visited checking uncertain tokens against the real configuration
  size_t table_nodes_walked = 0;  // trie nodes visited building tables (a skipped subtree counts one)
};

class TokenMasker {
 public:
  TokenMasker(std::shared_ptr<PushdownAutomaton> automaton, std::shared_ptr<const TokenTrie> trie);

  // Writes the mask of `config` into `mask` (mask_words(vocab_size) words).
  void fill_mask(PushdownAutomaton::ConfigId config, std::span<uint64_t> mask);
  // Whether the whole spelling of token `id` can follow `config` (EOS: whether config accepts).
  bool token_allowed(PushdownAutomaton::ConfigId config, int32_t id);
  // The configuration after token `id`'s bytes (kDead if it cannot follow).
  PushdownAutomaton::ConfigId advance(PushdownAutomaton::ConfigId config, int32_t id);

  PushdownAutomaton& automaton() { return *automaton_; }
  const TokenTrie& trie() const { return *trie_; }
  const MaskStats& stats() const { return stats_; }
  // On (the default): tables are also looked up in, and added to, the vocabulary's shared tables
  // (TokenTrie::shared_tables), so grammars that share a piece share its tables. Off: this masker builds
  // every table it needs itself.
  void set_share_tables(bool on) { share_tables_ = on; }

 private:
  using PositionTable = TokenTable;
  // At most this many frames of a stack are kept in a table's key.
  static constexpr uint32_t kMaxContextFrames = 8;
  // The table of a configuration of cut stacks.
  // Looked up by the configuration, then by its structural key in the vocabulary's shared tables
  // (unless sharing is off), built last.
  const PositionTable& table(PushdownAutomaton::ConfigId cut_config);
  PositionTable build_table(PushdownAutomaton::ConfigId cut_config);
  // The configuration every plain JSON-string character (bytes >= 0x20 other than the quote and the
  // backslash, as valid UTF-8) of the given kinds (bit k: lead class k of utf8_lead_class) leads to from
  // `config`, where all of them lead to the same one and no partial character dies; kDead where they do
  // not. A string's contents (the same configuration again) and a string bounded by maxLength (a counter
  // one lower) both have one.
  PushdownAutomaton::ConfigId plain_successor(PushdownAutomaton::ConfigId config, uint16_t classes);
  // Whether any run of `chars` plain characters of those kinds (the last one possibly cut short) survives
  // from `config`: then a trie subtree of such text no longer than that is accepted whole without walking it.
  bool plain_run_at_least(PushdownAutomaton::ConfigId config, uint16_t classes, uint32_t chars);

  std::shared_ptr<PushdownAutomaton> automaton_;
  std::shared_ptr<const TokenTrie> trie_;
  std::unordered_map<PushdownAutomaton::ConfigId, std::shared_ptr<const PositionTable>> tables_;
  bool share_tables_ = true;
  static uint64_t run_key(PushdownAutomaton::ConfigId config, uint16_t classes) {
    return (uint64_t(uint32_t(config)) << 16) | classes;
  }
  std::unordered_map<uint64_t, PushdownAutomaton::ConfigId> plain_next_;  // plain_successor, by run_key
  // Per run_key: plain characters known to survive, and whether that is all of them.
  struct PlainRun {
    uint32_t chars = 0;
    bool exact = false;
  };
  std::unordered_map<uint64_t, PlainRun> plain_run_;
  std::vector<PushdownAutomaton::ConfigId> run_path_;
  std::unordered_map<PushdownAutomaton::ConfigId, TokenBitmask> cache_;
  // Sets in `mask` the tokens of the table's uncertain subtrees that can follow `config`.
  void check_uncertain(const PositionTable& t, PushdownAutomaton::ConfigId config, std::span<uint64_t> mask);
  std::vector<PushdownAutomaton::ConfigId> walk_configs_;
  std::vector<uint8_t> walk_escaped_;
  std::vector<uint8_t> path_;
  std::vector<uint32_t> cut_nodes_;
  MaskStats stats_;
};

}  // namespace deepmoe::grammar
