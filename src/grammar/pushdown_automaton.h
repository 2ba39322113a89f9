// The byte-level pushdown automaton that runs a Grammar. A parse position is a stack of frames; stacks are
// hash-consed into nodes (position, parent node), so equal stacks are one id and a set of stacks — a
// configuration — is a sorted list of node ids, itself interned. Transitions between configurations are
// computed on first use and then cached per (configuration, byte), so a walk over the token trie mostly costs
// one array read per byte (a lazily built DFA over the pushdown's configurations).
//
// Frames are popped before a rule reference that ends its sequence (tail calls), so right-recursive
// repetition `x*` runs in constant stack depth and the same configuration recurs inside a long string or
// array — which is what makes the mask cache effective.
//
// Not thread-safe: one automaton per request (or per thread).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "grammar/grammar.h"

namespace deepmoe::grammar {

struct AutomatonLimits {
  size_t max_nodes = 8'000'000;
  size_t max_configs = 1'000'000;
  size_t max_stacks_per_config = 20'000;  // more live parses than this: the grammar is too ambiguous
};

class PushdownAutomaton {
 public:
  using ConfigId = int32_t;
  static constexpr ConfigId kDead = -1;          // no parse survives
  static constexpr uint32_t kAcceptNode = 0;     // the root rule is complete
  static constexpr uint32_t kEscapeNode = 1;     // a local run (local_start) popped below its first frame

  explicit PushdownAutomaton(Grammar grammar, AutomatonLimits limits = {});

  const Grammar& grammar() const { return grammar_; }
  ConfigId initial() const { return initial_; }
  ConfigId step(ConfigId config, uint8_t byte) {
    const Config& c = configs_[size_t(config)];
    if (c.next) {
      int32_t n = (*c.next)[byte];
      if (n != kUnknown) return n;
    } else {
      for (const auto& [b, n] : c.few)
        if (b == byte) return n;
    }
    return compute_step(config, byte);
  }
  bool accepts(ConfigId config) const { return config >= 0 && configs_[size_t(config)].accepts; }
  bool escaped(ConfigId config) const { return config >= 0 && configs_[size_t(config)].escaped; }
  // Bytes some parse of the configuration can take next.
  const ByteSet& viable_bytes(ConfigId config) const { return configs_[size_t(config)].viable; }
  const std::vector<uint32_t>& nodes(ConfigId config) const { return configs_[size_t(config)].nodes; }
  uint32_t node_position(uint32_t node) const { return nodes_[node].pos; }
  // Frames in the stack `node` (the sentinels have none).
  uint32_t node_depth(uint32_t node) const { return nodes_[node].depth; }
  uint32_t node_parent(uint32_t node) const { return nodes_[node].parent; }

  // The stack `node` cut to its top `frames` frames, with the escape node below them (or the accept node
  // when the whole stack fits): the context a precomputed token table depends on. Equal cuts are one id.
  uint32_t truncated_stack(uint32_t node, int frames);
  // A description of the configuration's stacks and of every rule they can reach (rules numbered in order
  // of first appearance, byte sets spelled out, names left out): configurations of any two grammars with
  // the same key take the same byte strings to the same outcomes, stack for stack, so whatever is computed
  // from one (a token table) holds for the other. Empty when the key would exceed `max_bytes`.
  std::string structural_key(ConfigId config, size_t max_bytes);
  // The configuration made of these stacks (any order, duplicates allowed).
  ConfigId config_of(std::vector<uint32_t> nodes) { return intern_config(nodes); }

  // Off: each (configuration, byte) transition is computed on its own — the plain definition, kept for tests
  // that check the shared computation against it. On (the default): computing one byte's transition also
  // fills it in for every byte the configuration's stacks cannot tell apart (the same stacks take it), so
  // a character class costs one computation instead of one per byte.
  void set_share_byte_classes(bool on) { share_byte_classes_ = on; }

  size_t config_count() const { return configs_.size(); }
  size_t node_count() const { return nodes_.size(); }

 private:
  static constexpr int32_t kUnknown = -2;

  enum class ElemKind : uint8_t { bytes, rule, end };
  struct Elem {
    ElemKind kind;
    uint32_t index;  // byte set or rule
  };
  struct Node {
    uint32_t pos;
    uint32_t parent;
    uint32_t depth;
  };
  struct Config {
    std::vector<uint32_t> nodes;  // sorted
    // Transitions seen so far: a short list first (most configurations are left by one or two bytes), a
    // full row once it grows.
    std::vector<std::pair<uint8_t, int32_t>> few;
    std::unique_ptr<std::array<int32_t, 256>> next;
    ByteSet viable;
    bool accepts = false;
    bool escaped = false;
  };
  struct NodesHash {
    size_t operator()(const std::vector<uint32_t>& v) const;
  };

  ConfigId compute_step(ConfigId config, uint8_t byte);
  uint32_t intern(uint32_t pos, uint32_t parent);
  // Appends to `out` the terminal stacks (and accept/escape markers) reached from frame (pos, parent).
  void closure(uint32_t pos, uint32_t parent, std::vector<uint32_t>& out);
  const std::vector<uint32_t>& successors(uint32_t node);
  ConfigId intern_config(std::vector<uint32_t>& nodes);

  Grammar grammar_;
  AutomatonLimits limits_;
  std::vector<Elem> elems_;
  std::vector<std::vector<uint32_t>> rule_starts_;
  std::vector<uint32_t> rule_begin_;  // rule r's positions: [rule_begin_[r], rule_begin_[r + 1])
  uint32_t rule_of_position(uint32_t pos) const;
  // structural_key's scratch: per rule a hash of its shape (0: not computed yet), the numbers given to rules
  // and byte sets in the current key (valid where their stamp is key_stamp_), the key being built.
  std::vector<uint64_t> rule_shape_;
  std::vector<uint32_t> key_rule_stamp_, key_rule_number_, key_set_stamp_, key_set_number_;
  std::vector<uint32_t> key_words_, key_rules_;
  uint32_t key_stamp_ = 0;
  std::vector<Node> nodes_;
  std::unordered_map<uint64_t, uint32_t> node_index_;
  std::vector<std::vector<uint32_t>> successors_;
  std::vector<uint8_t> successors_known_;
  std::vector<Config> configs_;
  std::unordered_map<std::vector<uint32_t>, ConfigId, NodesHash> config_index_;
  std::vector<uint32_t> stamp_;
  uint32_t stamp_value_ = 0;
  std::vector<std::pair<uint32_t, uint32_t>> work_;
  std::vector<uint64_t> seen_list_;
  std::unordered_set<uint64_t> seen_set_;
  std::vector<uint32_t> scratch_;
  ConfigId initial_ = kDead;
  bool share_byte_classes_ = true;
};

}  // namespace deepmoe::grammar
