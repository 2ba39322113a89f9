#include "grammar/grammar.h"

#include <algorithm>
#include <bit>
#include <unordered_map>

#include "core/error.h"

namespace deepmoe::grammar {

int ByteSet::count() const {
  int n = 0;
  for (uint64_t w : words) n += std::popcount(w);
  return n;
}

size_t Grammar::symbol_count() const {
  size_t n = 0;
  for (const Rule& r : rules)
    for (const Sequence& s : r.alternatives) n += s.size() + 1;
  return n;
}

void GrammarBuilder::charge(size_t n) {
  symbols_ += n;
  if (symbols_ > limits_.max_symbols)
    throw Error("grammar: more than " + std::to_string(limits_.max_symbols) +
                " symbols (repetition counts, enums or nesting too large)");
}

uint32_t GrammarBuilder::declare(std::string name) {
  if (grammar_.rules.size() >= limits_.max_rules)
    throw Error("grammar: more than " + std::to_string(limits_.max_rules) + " rules");
  grammar_.rules.push_back(Rule{std::move(name), {}});
  intentionally_empty_.push_back(false);
  return uint32_t(grammar_.rules.size() - 1);
}

void GrammarBuilder::add_alternative(uint32_t rule, Sequence seq) {
  charge(seq.size() + 1);
  grammar_.rules[rule].alternatives.push_back(std::move(seq));
}

void GrammarBuilder::set_alternatives(uint32_t rule, std::vector<Sequence> alts) {
  for (Sequence& s : alts) add_alternative(rule, std::move(s));
  if (alts.empty()) intentionally_empty_[rule] = true;
}

Symbol GrammarBuilder::bytes(const ByteSet& set) {
  // Small grammars have few distinct sets; a linear scan of the last few covers the common repeats.
  auto& sets = grammar_.byte_sets;
  for (size_t i = sets.size(), n = 0; i-- > 0 && n < 64; ++n)
    if (sets[i] == set) return Symbol::bytes(uint32_t(i));
  sets.push_back(set);
  return Symbol::bytes(uint32_t(sets.size() - 1));
}

void GrammarBuilder::append_literal(Sequence& seq, std::string_view text) {
  for (char c : text) seq.push_back(byte(uint8_t(c)));
}

Symbol GrammarBuilder::choice(std::string name, std::vector<Sequence> alts) {
  uint32_t r = declare(std::move(name));
  set_alternatives(r, std::move(alts));
  return Symbol::rule(r);
}

Symbol GrammarBuilder::literal_set(std::string name, const std::vector<std::string>& strings) {
  struct Node {
    std::vector<std::pair<uint8_t, uint32_t>> children;  // sorted by byte
    bool end = false;
  };
  std::vector<Node> trie(1);
  for (const std::string& s : strings) {
    charge(s.size());
    uint32_t n = 0;
    for (char ch : s) {
      uint8_t b = uint8_t(ch);
      auto& kids = trie[n].children;
      auto it = std::lower_bound(kids.begin(), kids.end(), std::pair<uint8_t, uint32_t>{b, 0},
                                 [](const auto& x, const auto& y) { return x.first < y.first; });
      if (it == kids.end() || it->first != b) {
        uint32_t child = uint32_t(trie.size());
        it = kids.insert(it, {b, child});
        trie.push_back({});
      }
      n = it->second;
    }
    trie[n].end = true;
  }
  // Children are created after their parents, so a reverse pass builds every child's rule first.
  std::vector<Symbol> rule_of(trie.size());
  for (size_t i = trie.size(); i-- > 0;) {
    std::vector<Sequence> alts;
    if (trie[i].end) alts.push_back({});
    for (auto [b, child] : trie[i].children) {
      const Node& c = trie[child];
      if (c.children.empty()) alts.push_back({byte(b)});
      else alts.push_back({byte(b), rule_of[child]});
    }
    rule_of[i] = choice(name, std::move(alts));
  }
  return rule_of[0];
}

Symbol GrammarBuilder::nothing() { return choice("nothing", {}); }
Symbol GrammarBuilder::empty() { return choice("empty", {Sequence{}}); }

Symbol GrammarBuilder::repeat(std::string name, const Sequence& item, int64_t min, int64_t max) {
  if (min < 0 || (max >= 0 && max < min)) throw Error("grammar: repetition {" + std::to_string(min) + "," +
                                                        std::to_string(max) + "} of " + name + " is empty");
  if (min > 1'000'000 || max > 1'000'000)
    throw Error("grammar: repetition count over 1000000 in " + name);
  charge(size_t(min) * item.size());
  Sequence out;
  for (int64_t i = 0; i < min; ++i) out.insert(out.end(), item.begin(), item.end());
  if (max < 0) {
    // tail ::= item tail | ""
    uint32_t tail = declare(name + "-star");
    Sequence loop = item;
    loop.push_back(Symbol::rule(tail));
    add_alternative(tail, std::move(loop));
    add_alternative(tail, {});
    out.push_back(Symbol::rule(tail));
  } else if (max > min) {
    // opt_k ::= item opt_{k-1} | "" ; opt_1 ::= item | "" — one chain per item, extended as needed.
    std::string key;
    for (const Symbol& s : item) key += std::to_string(int(s.kind)) + ":" + std::to_string(s.index) + " ";
    std::vector<uint32_t>& chain = optional_chain_of_item_[key];
    for (int64_t k = int64_t(chain.size()) + 1; k <= max - min; ++k) {
      uint32_t r = declare(name + "-opt");
      Sequence seq = item;
      if (!chain.empty()) seq.push_back(Symbol::rule(chain.back()));
      add_alternative(r, std::move(seq));
      add_alternative(r, {});
      chain.push_back(r);
    }
    out.push_back(Symbol::rule(chain[size_t(max - min - 1)]));
  }
  return wrap(name, std::move(out));
}

Grammar GrammarBuilder::finish(uint32_t root) {
  grammar_.root = root;
  normalize_grammar(grammar_, intentionally_empty_);
  return std::move(grammar_);
}

void normalize_grammar(Grammar& g, const std::vector<bool>&) {
  const size_t n = g.rules.size();
  if (g.root >= n) throw Error("grammar: no root rule");
  // Productive rules: some alternative made only of non-empty byte sets and productive rules.
  std::vector<char> productive(n, 0);
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t r = 0; r < n; ++r) {
      if (productive[r]) continue;
      for (const Sequence& seq : g.rules[r].alternatives) {
        bool ok = true;
        for (const Symbol& s : seq) {
          if (s.kind == Symbol::Kind::rule ? !productive[s.index] : g.byte_sets[s.index].empty()) { ok = false; break; }
        }
        if (ok) { productive[r] = 1; changed = true; break; }
      }
    }
  }
  for (Rule& rule : g.rules) {
    std::erase_if(rule.alternatives, [&](const Sequence& seq) {
      for (const Symbol& s : seq)
        if (s.kind == Symbol::Kind::rule ? !productive[s.index] : g.byte_sets[s.index].empty()) return true;
      return false;
    });
  }
  // Nullable rules, then the "may start with" graph through nullable prefixes: a cycle is left recursion.
  std::vector<char> nullable(n, 0);
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t r = 0; r < n; ++r) {
      if (nullable[r]) continue;
      for (const Sequence& seq : g.rules[r].alternatives) {
        bool all = true;
        for (const Symbol& s : seq)
          if (s.kind == Symbol::Kind::bytes || !nullable[s.index]) { all = false; break; }
        if (all) { nullable[r] = 1; changed = true; break; }
      }
    }
  }
  std::vector<std::vector<uint32_t>> starts(n);
  for (size_t r = 0; r < n; ++r)
    for (const Sequence& seq : g.rules[r].alternatives)
      for (const Symbol& s : seq) {
        if (s.kind == Symbol::Kind::bytes) break;
        starts[r].push_back(s.index);
        if (!nullable[s.index]) break;
      }
  // Iterative three-colour DFS (grammars from repetition chains are deep).
  std::vector<uint8_t> colour(n, 0);
  std::vector<std::pair<uint32_t, size_t>> stack;
  for (size_t r0 = 0; r0 < n; ++r0) {
    if (colour[r0]) continue;
    stack.push_back({uint32_t(r0), 0});
    colour[r0] = 1;
    while (!stack.empty()) {
      auto& [r, i] = stack.back();
      if (i < starts[r].size()) {
        uint32_t next = starts[r][i++];
        if (colour[next] == 1)
          throw Error("grammar: rule '" + g.rules[next].name +
                      "' is left-recursive (it can begin with itself); rewrite it with repetition");
        if (colour[next] == 0) {
          colour[next] = 1;
          stack.push_back({next, 0});
        }
      } else {
        colour[r] = 2;
        stack.pop_back();
      }
    }
  }
}

namespace {
std::string byte_set_text(const ByteSet& s) {
  auto esc = [](int b) -> std::string {
    if (b >= 0x21 && b < 0x7f && b != ']' && b != '\\' && b != '-' && b != '^') return std::string(1, char(b));
    char buf[8];
    snprintf(buf, sizeof buf, "\\x%02X", b);
    return buf;
  };
  if (s.count() == 1)
    for (int b = 0; b < 256; ++b)
      if (s.test(uint8_t(b))) {
        if (b >= 0x20 && b < 0x7f && b != '"' && b != '\\') return std::string("\"") + char(b) + "\"";
        return "[" + esc(b) + "]";
      }
  std::string out = "[";
  for (int b = 0; b < 256;) {
    if (!s.test(uint8_t(b))) { ++b; continue; }
    int e = b;
    while (e + 1 < 256 && s.test(uint8_t(e + 1))) ++e;
    out += esc(b);
    if (e > b) out += "-" + esc(e);
    b = e + 1;
  }
  return out + "]";
}
}  // namespace

std::string to_string(const Grammar& g) {
  std::string out;
  for (size_t r = 0; r < g.rules.size(); ++r) {
    out += g.rules[r].name + "#" + std::to_string(r) + (r == g.root ? " (root)" : "") + " ::=";
    if (g.rules[r].alternatives.empty()) out += " <nothing>";
    for (size_t a = 0; a < g.rules[r].alternatives.size(); ++a) {
      if (a) out += " |";
      if (g.rules[r].alternatives[a].empty()) out += " \"\"";
      for (const Symbol& s : g.rules[r].alternatives[a])
        out += " " + (s.kind == Symbol::Kind::bytes ? byte_set_text(g.byte_sets[s.index])
                                                     : g.rules[s.index].name + "#" + std::to_string(s.index));
    }
    out += "\n";
  }
  return out;
}

}  // namespace deepmoe::grammar
