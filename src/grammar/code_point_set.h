// Sets of Unicode code points (character classes of GBNF and of JSON Schema patterns) and their translation
// into UTF-8 byte sequences for the byte-level grammar. Surrogates (U+D800–U+DFFF) are never included: they
// are not characters UTF-8 can encode.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "grammar/grammar.h"

namespace deepmoe::grammar {

constexpr uint32_t kMaxCodePoint = 0x10FFFF;

class CodePointSet {
 public:
  void add(uint32_t lo, uint32_t hi);  // inclusive
  void add(uint32_t cp) { add(cp, cp); }
  void add(const CodePointSet& other);
  CodePointSet complement() const;
  bool empty() const { return ranges_.empty(); }
  bool contains(uint32_t cp) const;
  // Sorted, disjoint, non-adjacent; surrogates removed.
  const std::vector<std::pair<uint32_t, uint32_t>>& ranges() const;

 private:
  mutable std::vector<std::pair<uint32_t, uint32_t>> ranges_;
  mutable bool normalized_ = true;
};

// Alternatives of byte-set sequences matching exactly the UTF-8 encodings of the set's code points.
std::vector<Sequence> utf8_alternatives(const CodePointSet& set, GrammarBuilder& builder);

// Appends the UTF-8 encoding of cp.
void append_utf8(std::string& out, uint32_t cp);

}  // namespace deepmoe::grammar
