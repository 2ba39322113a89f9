// Pre-tokenizers: cut a text into the pieces BPE encodes one at a time, as HF tokenizers' `pre_tokenizer` does
// (tokenizers/src/pre_tokenizers/{sequence,split}.rs). Pieces are byte ranges into the text; the ByteLevel
// step's byte→char mapping needs no work here because the BPE model works on raw bytes directly.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/regex.h"

namespace deepmoe {

struct Span {
  size_t begin = 0, end = 0;
};

// What a Split does with the delimiter matches (HF SplitDelimiterBehavior).
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Parses "Removed", "Isolated", ...; throws Error naming an unknown behavior.
SplitBehavior parse_split_behavior(const std::string& name);

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Appends the pieces of text to `out`, in order. text must be valid UTF-8.
  virtual void split(std::string_view text, std::vector<Span>& out) const = 0;
};

// One step of a Sequence: refines every current piece independently (each piece is the whole subject of the
// step's regex, so ^, $ and look-arounds stop at piece boundaries, as in HF).
class PreTokenizerStep {
 public:
  virtual ~PreTokenizerStep() = default;
  virtual void apply(std::string_view text, const std::vector<Span>& in, std::vector<Span>& out) const = 0;
};

class SplitStep final : public PreTokenizerStep {
 public:
  SplitStep(std::string_view pattern, bool literal, SplitBehavior behavior, bool invert);
  void apply(std::string_view text, const std::vector<Span>& in, std::vector<Span>& out) const override;
  const std::string& pattern() const { return regex_.pattern(); }
  bool literal() const { return literal_; }
  bool invert() const { return invert_; }
  SplitBehavior behavior() const { return behavior_; }

 private:
  Regex regex_;
  bool literal_;
  SplitBehavior behavior_;
  bool invert_;
};

// HF "Sequence" of steps (a single Split is a sequence of one). ByteLevel with use_regex=false adds no step.
class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizerStep>> steps) : steps_(std::move(steps)) {}
  void split(std::string_view text, std::vector<Span>& out) const override;

 private:
  std::vector<std::unique_ptr<PreTokenizerStep>> steps_;
};

// The regex of GPT-2 that HF's ByteLevel pre-tokenizer applies when use_regex is true.
extern const char* const kGpt2SplitPattern;

}  // namespace deepmoe
