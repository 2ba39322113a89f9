// A compiled Unicode regular expression (PCRE2 with UTF + UCP, JIT-compiled when available) for the Split
// pre-tokenizer. HF tokenizers uses Oniguruma; the patterns tokenizer.json files use (\p{..} classes, [..]
// sets, look-ahead) mean the same in PCRE2. Subjects must be valid UTF-8 (the tokenizer repairs input first).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace deepmoe {

class Regex {
 public:
  // Throws deepmoe::Error naming the pattern and PCRE2's message when it does not compile. `literal` matches
  // the pattern text exactly (HF's {"String": ...} split patterns).
  explicit Regex(std::string_view pattern, bool literal = false);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends the non-empty, non-overlapping matches in subject, left to right, as byte ranges [begin, end).
  void find_all(std::string_view subject, std::vector<std::pair<size_t, size_t>>& matches) const;

  // Whether the pattern matches at the very start of subject (anchored).
  bool matches_at_start(std::string_view subject) const;

  const std::string& pattern() const { return pattern_; }

 private:
  struct Code;
  std::string pattern_;
  std::unique_ptr<Code> code_;
};

}  // namespace deepmoe
