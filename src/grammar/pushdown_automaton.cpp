#include "grammar/pushdown_automaton.h"

#include <algorithm>
#include <unordered_set>

#include "core/error.h"

namespace deepmoe::grammar {

size_t PushdownAutomaton::NodesHash::operator()(const std::vector<uint32_t>& v) const {
  uint64_t h = 1469598103934665603ull;
  for (uint32_t x : v) h = (h ^ x) * 1099511628211ull;
  return size_t(h ^ (h >> 29));
}

PushdownAutomaton::PushdownAutomaton(Grammar grammar, AutomatonLimits limits)
    : grammar_(std::move(grammar)), limits_(limits) {
  rule_starts_.resize(grammar_.rules.size());
  rule_begin_.resize(grammar_.rules.size() + 1);
  for (size_t r = 0; r < grammar_.rules.size(); ++r) {
    rule_begin_[r] = uint32_t(elems_.size());
    for (const Sequence& seq : grammar_.rules[r].alternatives) {
      rule_starts_[r].push_back(uint32_t(elems_.size()));
      for (const Symbol& s : seq)
        elems_.push_back({s.kind == Symbol::Kind::bytes ? ElemKind::bytes : ElemKind::rule, s.index});
      elems_.push_back({ElemKind::end, 0});
    }
  }
  rule_begin_.back() = uint32_t(elems_.size());
  nodes_.push_back({0, 0, 0});  // kAcceptNode
  nodes_.push_back({0, 1, 0});  // kEscapeNode
  std::vector<uint32_t> start;
  for (uint32_t a : rule_starts_[grammar_.root]) closure(a, kAcceptNode, start);
  initial_ = start.empty() ? kDead : intern_config(start);
}

uint32_t PushdownAutomaton::intern(uint32_t pos, uint32_t parent) {
  uint64_t key = (uint64_t(pos) << 32) | parent;
  auto [it, inserted] = node_index_.try_emplace(key, uint32_t(nodes_.size()));
  if (inserted) {
    if (nodes_.size() >= limits_.max_nodes)
      throw Error("grammar matcher: more than " + std::to_string(limits_.max_nodes) + " parse stacks");
    nodes_.push_back({pos, parent, nodes_[parent].depth + 1});
  }
  return it->second;
}

void PushdownAutomaton::closure(uint32_t pos, uint32_t parent, std::vector<uint32_t>& out) {
  // Iterative: grammars from long repetition chains or deep nesting would overflow a recursive walk.
  work_.clear();
  work_.push_back({pos, parent});
  // Visited frames: a short list (closures are usually small), a hash set past 64.
  seen_list_.clear();
  seen_set_.clear();
  auto first_visit = [&](uint64_t key) {
    if (seen_list_.size() < 64) {
      for (uint64_t k : seen_list_)
        if (k == key) return false;
      seen_list_.push_back(key);
      return true;
    }
    for (uint64_t k : seen_list_)
      if (k == key) return false;
    return seen_set_.insert(key).second;
  };
  while (!work_.empty()) {
    auto [p, par] = work_.back();
    work_.pop_back();
    if (!first_visit((uint64_t(p) << 32) | par)) continue;
    const Elem& e = elems_[p];
    if (e.kind == ElemKind::bytes) {
      out.push_back(intern(p, par));
    } else if (e.kind == ElemKind::end) {
      if (par <= kEscapeNode) {
        out.push_back(par);
      } else {
        const Node& pn = nodes_[par];
        work_.push_back({pn.pos + 1, pn.parent});
      }
    } else {
      // Tail call: a reference that ends its sequence needs no frame of its own.
      uint32_t frame = elems_[p + 1].kind == ElemKind::end ? par : intern(p, par);
      for (uint32_t a : rule_starts_[e.index]) work_.push_back({a, frame});
    }
    if (out.size() > limits_.max_stacks_per_config)
      throw Error("grammar matcher: more than " + std::to_string(limits_.max_stacks_per_config) +
                  " simultaneous parses (the grammar is too ambiguous)");
  }
}

const std::vector<uint32_t>& PushdownAutomaton::successors(uint32_t node) {
  auto grow = [&] {
    size_t n = std::max(successors_.size() * 2, nodes_.size() + 1024);
    successors_.resize(n);
    successors_known_.resize(n, 0);
  };
  if (successors_.size() <= node) grow();
  if (!successors_known_[node]) {
    std::vector<uint32_t> out;
    Node n = nodes_[node];
    closure(n.pos + 1, n.parent, out);
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());

    successors_[node] = std::move(out);
    successors_known_[node] = 1;
  }
  return successors_[node];
}

PushdownAutomaton::ConfigId PushdownAutomaton::intern_config(std::vector<uint32_t>& nodes) {
  std::sort(nodes.begin(), nodes.end());
  nodes.erase(std::unique(nodes.begin(), nodes.end()), nodes.end());
  if (nodes.empty()) return kDead;
  if (nodes.size() > limits_.max_stacks_per_config)
    throw Error("grammar matcher: more than " + std::to_string(limits_.max_stacks_per_config) +
                " simultaneous parses (the grammar is too ambiguous)");
  auto it = config_index_.find(nodes);
  if (it != config_index_.end()) return it->second;
  if (configs_.size() >= limits_.max_configs)
    throw Error("grammar matcher: more than " + std::to_string(limits_.max_configs) + " parser states");
  Config c;
  c.nodes = nodes;
  for (uint32_t n : nodes) {
    if (n == kAcceptNode) c.accepts = true;
    else if (n == kEscapeNode) c.escaped = true;
    else c.viable |= grammar_.byte_sets[elems_[nodes_[n].pos].index];
  }
  ConfigId id = ConfigId(configs_.size());
  configs_.push_back(std::move(c));
  config_index_.emplace(nodes, id);
  return id;
}

uint32_t PushdownAutomaton::rule_of_position(uint32_t pos) const {
  return uint32_t(std::upper_bound(rule_begin_.begin(), rule_begin_.end(), pos) - rule_begin_.begin()) - 1;
}

uint32_t PushdownAutomaton::truncated_stack(uint32_t node, int frames) {
  uint32_t positions[16];
  int n = 0;
  uint32_t cur = node;
  frames = std::min(frames, 16);
  while (cur > kEscapeNode && n < frames) {
    positions[n++] = nodes_[cur].pos;
    cur = nodes_[cur].parent;
  }
  uint32_t parent = cur == kAcceptNode ? kAcceptNode : kEscapeNode;
  for (int i = n; i-- > 0;) parent = intern(positions[i], parent);
  return parent;
}



std::string PushdownAutomaton::structural_key(ConfigId config, size_t max_bytes) {
  constexpr uint32_t kBytesMark = UINT32_MAX, kEscapeMark = UINT32_MAX - 1, kAcceptMark = UINT32_MAX - 2;
  if (rule_shape_.empty()) {
    rule_shape_.assign(grammar_.rules.size(), 0);
    key_rule_stamp_.assign(grammar_.rules.size(), 0);
    key_rule_number_.assign(grammar_.rules.size(), 0);
  }
  if (key_set_stamp_.size() < grammar_.byte_sets.size()) {
    key_set_stamp_.resize(grammar_.byte_sets.size(), 0);
    key_set_number_.resize(grammar_.byte_sets.size(), 0);
  }
  ++key_stamp_;
  // The stacks in an order that does not depend on node ids: by a description of each stack on its own
  // (offsets and a hash of the shape of its frames' rules). Stacks that describe alike keep the
  // configuration's order; that only risks two equal configurations getting different keys, never the reverse.
  auto rule_shape = [&](uint32_t r) {
    uint64_t& h = rule_shape_[r];
    if (h) return h;
    h = 1469598103934665603ull;
    auto mix = [&](uint64_t v) { h = (h ^ v) * 1099511628211ull; };
    mix(grammar_.rules[r].alternatives.size());
    for (const Sequence& seq : grammar_.rules[r].alternatives) {
      mix(seq.size());
      for (const Symbol& sym : seq) {
        if (sym.kind == Symbol::Kind::rule) { mix(kBytesMark); continue; }
        for (uint64_t w : grammar_.byte_sets[sym.index].words) mix(w);
      }
    }
    h |= 1;  // never 0 (0 marks "not computed")
    return h;
  };
  const std::vector<uint32_t>& stacks = configs_[size_t(config)].nodes;
  std::vector<std::vector<uint64_t>> alone(stacks.size());
  for (size_t i = 0; i < stacks.size(); ++i) {
    for (uint32_t cur = stacks[i]; cur > kEscapeNode; cur = nodes_[cur].parent) {
      uint32_t r = rule_of_position(nodes_[cur].pos);
      alone[i].push_back(nodes_[cur].pos - rule_begin_[r]);
      alone[i].push_back(rule_shape(r));
    }
  }
  std::vector<size_t> order(stacks.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return alone[a] < alone[b]; });

  // Rules and byte sets are numbered in order of first appearance; a byte set is spelled out where it first
  // appears, so the key reads back unambiguously.
  std::vector<uint32_t>& key = key_words_;
  std::vector<uint32_t>& rules = key_rules_;
  key.clear();
  rules.clear();
  uint32_t sets = 0;
  auto number_of = [&](uint32_t r) {
    if (key_rule_stamp_[r] != key_stamp_) {
      key_rule_stamp_[r] = key_stamp_;
      key_rule_number_[r] = uint32_t(rules.size());
      rules.push_back(r);
    }
    return key_rule_number_[r];
  };
  key.push_back(uint32_t(stacks.size()));
  for (size_t i : order) {
    uint32_t cur = stacks[i];
    for (; cur > kEscapeNode; cur = nodes_[cur].parent) {
      uint32_t r = rule_of_position(nodes_[cur].pos);
      key.push_back(number_of(r));
      key.push_back(nodes_[cur].pos - rule_begin_[r]);
    }
    key.push_back(cur == kAcceptNode ? kAcceptMark : kEscapeMark);
  }
  const size_t max_words = max_bytes / sizeof(uint32_t);
  for (size_t i = 0; i < rules.size(); ++i) {
    const Rule& rule = grammar_.rules[rules[i]];
    key.push_back(uint32_t(rule.alternatives.size()));
    for (const Sequence& seq : rule.alternatives) {
      key.push_back(uint32_t(seq.size()));
      for (const Symbol& sym : seq) {
        if (sym.kind == Symbol::Kind::rule) {
          key.push_back(number_of(sym.index));
          continue;
        }
        key.push_back(kBytesMark);
        if (key_set_stamp_[sym.index] == key_stamp_) {
          key.push_back(key_set_number_[sym.index]);
        } else {
          key_set_stamp_[sym.index] = key_stamp_;
          key_set_number_[sym.index] = sets;
          key.push_back(sets++);
          for (uint64_t w : grammar_.byte_sets[sym.index].words) {
            key.push_back(uint32_t(w));
            key.push_back(uint32_t(w >> 32));
          }
        }
      }
    }
    if (key.size() > max_words) return {};
  }
  return std::string(reinterpret_cast<const char*>(key.data()), key.size() * sizeof(uint32_t));
}

PushdownAutomaton::ConfigId PushdownAutomaton::compute_step(ConfigId config, uint8_t byte) {
  ConfigId result = kDead;
  // The bytes that the same stacks take (this byte's class); filled in below along with `byte`.
  ByteSet same;
  same.words.fill(~uint64_t(0));
  if (configs_[size_t(config)].viable.test(byte)) {
    scratch_.clear();
    // Copy: successors() and intern_config() may grow configs_ and invalidate references.
    std::vector<uint32_t> from = configs_[size_t(config)].nodes;
    for (uint32_t n : from) {
      if (n <= kEscapeNode) continue;
      const ByteSet& set = grammar_.byte_sets[elems_[nodes_[n].pos].index];
      bool takes = set.test(byte);
      for (int w = 0; w < 4; ++w) same.words[w] &= takes ? set.words[w] : ~set.words[w];
      if (!takes) continue;
      const std::vector<uint32_t>& s = successors(n);
      scratch_.insert(scratch_.end(), s.begin(), s.end());
    }
    std::vector<uint32_t> next = std::move(scratch_);
    scratch_ = {};
    result = intern_config(next);
  }
  Config& c = configs_[size_t(config)];
  if (share_byte_classes_ && result != kDead && same.count() > 1) {
    // A class of several bytes: give the configuration its full row and fill the class in.
    if (!c.next) {
      c.next = std::make_unique<std::array<int32_t, 256>>();
      c.next->fill(kUnknown);
      for (const auto& [b, n] : c.few) (*c.next)[b] = n;
      c.few.clear();
      c.few.shrink_to_fit();
    }
    for (int b = 0; b < 256; ++b)
      if (same.test(uint8_t(b))) (*c.next)[b] = result;
    return result;
  }
  if (!c.next && c.few.size() < 8) {
    c.few.push_back({byte, result});
    return result;
  }
  if (!c.next) {
    c.next = std::make_unique<std::array<int32_t, 256>>();
    c.next->fill(kUnknown);
    for (const auto& [b, n] : c.few) (*c.next)[b] = n;
    c.few.clear();
    c.few.shrink_to_fit();
  }
  (*c.next)[byte] = result;
  return result;
}

}  // namespace deepmoe::grammar
