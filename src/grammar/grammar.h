// A context-free grammar over bytes: rules made of alternatives, each a sequence of byte sets and rule
// references. Every front end (GBNF, JSON Schema, the "any JSON value" mode) builds one with GrammarBuilder;
// the pushdown matcher runs it. Repetition is desugared into helper rules here, so the matcher knows only
// sequences, alternatives and recursion.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace deepmoe::grammar {

// A set of byte values (one terminal of the grammar).
struct ByteSet {
  std::array<uint64_t, 4> words{};

  static ByteSet single(uint8_t b) { ByteSet s; s.set(b); return s; }
  static ByteSet range(uint8_t lo, uint8_t hi) { ByteSet s; for (int b = lo; b <= hi; ++b) s.set(uint8_t(b)); return s; }
  void set(uint8_t b) { words[b >> 6] |= uint64_t(1) << (b & 63); }
  bool test(uint8_t b) const { return (words[b >> 6] >> (b & 63)) & 1; }
  bool empty() const { return (words[0] | words[1] | words[2] | words[3]) == 0; }
  int count() const;
  ByteSet& operator|=(const ByteSet& o) { for (int i = 0; i < 4; ++i) words[i] |= o.words[i]; return *this; }
  bool operator==(const ByteSet& o) const { return words == o.words; }
};

struct Symbol {
  enum class Kind : uint8_t { bytes, rule };
  Kind kind;
  uint32_t index;  // into Grammar::byte_sets or Grammar::rules

  static Symbol bytes(uint32_t i) { return {Kind::bytes, i}; }
  static Symbol rule(uint32_t i) { return {Kind::rule, i}; }
};

using Sequence = std::vector<Symbol>;

struct Rule {
  std::string name;
  std::vector<Sequence> alternatives;  // none: the rule matches nothing; an empty sequence matches ""
};

struct Grammar {
  std::vector<Rule> rules;
  std::vector<ByteSet> byte_sets;
  uint32_t root = 0;

  size_t symbol_count() const;
};

// Limits that keep hostile grammars (huge repetition counts, huge enums) bounded in memory and time.
struct GrammarLimits {
  size_t max_symbols = 4'000'000;
  size_t max_rules = 1'000'000;
};

class GrammarBuilder {
 public:
  explicit GrammarBuilder(GrammarLimits limits = {}) : limits_(limits) {}

  // A new rule with no alternatives yet (so rules can refer to themselves or each other before definition).
  uint32_t declare(std::string name);
  void add_alternative(uint32_t rule, Sequence seq);
  void set_alternatives(uint32_t rule, std::vector<Sequence> alts);
  bool defined(uint32_t rule) const { return !grammar_.rules[rule].alternatives.empty(); }
  const std::string& name(uint32_t rule) const { return grammar_.rules[rule].name; }

  Symbol bytes(const ByteSet& set);  // deduplicated
  Symbol byte(uint8_t b) { return bytes(ByteSet::single(b)); }
  // The bytes of `text`, one symbol each, appended to `seq`.
  void append_literal(Sequence& seq, std::string_view text);
  Sequence literal(std::string_view text) { Sequence s; append_literal(s, text); return s; }
  // A rule with the given alternatives.
  Symbol choice(std::string name, std::vector<Sequence> alts);
  Symbol wrap(std::string name, Sequence seq) { return choice(std::move(name), {std::move(seq)}); }
  // `item` repeated min..max times (max < 0: unbounded), without ambiguity: optional tails nest
  // (x (x (x)?)?)? and the unbounded tail is right-recursive (the matcher runs it as a loop). The nested
  // optionals of one item are one chain shared by every bounded repetition of that item.
  Symbol repeat(std::string name, const Sequence& item, int64_t min, int64_t max);
  // Exactly the given strings, as a byte trie (one live parse per prefix, however many strings).
  Symbol literal_set(std::string name, const std::vector<std::string>& strings);
  // A rule that matches nothing.
  Symbol nothing();
  Symbol empty();

  // Finishes: checks every rule was defined (rules with no alternatives are allowed only from nothing()),
  // drops alternatives that can never match, and rejects left recursion (the matcher is top-down).
  Grammar finish(uint32_t root);

  size_t symbols() const { return symbols_; }

 private:
  void charge(size_t n);

  Grammar grammar_;
  GrammarLimits limits_;
  size_t symbols_ = 0;
  std::vector<bool> intentionally_empty_;
  // Per item (its symbols spelled out): the chain of nested optionals, [k - 1] allowing k more items.
  std::unordered_map<std::string, std::vector<uint32_t>> optional_chain_of_item_;
};

// Checks a grammar the way GrammarBuilder::finish does (used for grammars built elsewhere): removes
// unproductive alternatives and throws deepmoe::Error naming a left-recursive rule.
void normalize_grammar(Grammar& g, const std::vector<bool>& may_be_empty = {});

// Whether the grammar's language is empty (its root has no productive alternative: a `false` schema, an empty
// enum, contradictory allOf branches). Nothing can be generated under such a grammar.
inline bool matches_nothing(const Grammar& g) { return g.root >= g.rules.size() || g.rules[g.root].alternatives.empty(); }

// A readable dump (GBNF-like) for errors and debugging.
std::string to_string(const Grammar& g);

}  // namespace deepmoe::grammar
