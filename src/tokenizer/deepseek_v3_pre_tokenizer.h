// A hand-written equivalent of DeepSeek-V3's pre-tokenizer (tokenizer notes §7):
// the Sequence of three Isolated Splits
//   1. \p{N}{1,3}
//   2. [一-龥぀-ゟ゠-ヿ]+
//   3. [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+|
//      ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// done in one left-to-right pass with each alternative's backtracking worked out by hand (see the .cpp), and
// character classes from the same PCRE2 tables the regex path uses (unicode_flags.h). The tests check it
// against the regex path piece for piece on the golden texts and on random strings.
#pragma once

#include <memory>
#include <vector>

#include "tokenizer/pre_tokenizer.h"

namespace deepmoe {

class DeepSeekV3PreTokenizer final : public PreTokenizer {
 public:
  DeepSeekV3PreTokenizer();
  void split(std::string_view text, std::vector<Span>& out) const override;

  // Whether `steps` is exactly DeepSeek-V3's sequence (same patterns, Isolated, not inverted).
  static bool matches(const std::vector<std::unique_ptr<PreTokenizerStep>>& steps);
  // The three Split patterns, as tokenizer.json spells them.
  static const char* const kPatterns[3];

 private:
  void split_words(std::string_view text, size_t begin, size_t end, std::vector<Span>& out) const;
};

}  // namespace deepmoe
