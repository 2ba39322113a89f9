#include "tokenizer/pre_tokenizer.h"

#include <utility>

#include "core/error.h"

namespace deepmoe {

const char* const kGpt2SplitPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

SplitBehavior parse_split_behavior(const std::string& name) {
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  throw Error("unsupported Split behavior \"" + name + "\"");
}

SplitStep::SplitStep(std::string_view pattern, bool literal, SplitBehavior behavior, bool invert)
    : regex_(pattern, literal), literal_(literal), behavior_(behavior), invert_(invert) {}

void SplitStep::apply(std::string_view text, const std::vector<Span>& in, std::vector<Span>& out) const {
  thread_local std::vector<std::pair<size_t, size_t>> found;
  struct Part {
    Span span;
    bool is_match;
  };
  thread_local std::vector<Part> parts;
  for (const Span& piece : in) {
    std::string_view subject = text.substr(piece.begin, piece.end - piece.begin);
    found.clear();
    regex_.find_all(subject, found);
    // The whole piece as alternating gaps and matches (HF Split::split / find_matches).
    parts.clear();
    size_t pos = 0;
    for (auto [b, e] : found) {
      if (b > pos) parts.push_back({{piece.begin + pos, piece.begin + b}, invert_});
      parts.push_back({{piece.begin + b, piece.begin + e}, !invert_});
      pos = e;
    }
    if (pos < subject.size()) parts.push_back({{piece.begin + pos, piece.end}, invert_});

    switch (behavior_) {
      case SplitBehavior::kRemoved:
        for (const Part& p : parts)
          if (!p.is_match) out.push_back(p.span);
        break;
      case SplitBehavior::kIsolated:
        for (const Part& p : parts) out.push_back(p.span);
        break;
      case SplitBehavior::kMergedWithPrevious: {
        // A match joins the piece before it (unless that piece was a match too).
        size_t first = out.size();
        bool previous_match = false;
        for (const Part& p : parts) {
          if (p.is_match && !previous_match && out.size() > first) {
            out.back().end = p.span.end;
          } else {
            out.push_back(p.span);
          }
          previous_match = p.is_match;
        }
        break;
      }
      case SplitBehavior::kMergedWithNext: {
        // A match joins the piece after it (unless that piece is a match too); HF folds from the right.
        std::vector<Span> reversed;
        bool previous_match = false;
        for (size_t i = parts.size(); i-- > 0;) {
          const Part& p = parts[i];
          if (p.is_match && !previous_match && !reversed.empty()) {
            reversed.back().begin = p.span.begin;
          } else {
            reversed.push_back(p.span);
          }
          previous_match = p.is_match;
        }
        for (size_t i = reversed.size(); i-- > 0;) out.push_back(reversed[i]);
        break;
      }
      case SplitBehavior::kContiguous: {
        size_t first = out.size();
        bool previous_match = false;
        for (const Part& p : parts) {
          if (p.is_match == previous_match && out.size() > first) {
            out.back().end = p.span.end;
          } else {
            out.push_back(p.span);
          }
          previous_match = p.is_match;
        }
        break;
      }
    }
  }
}

void SequencePreTokenizer::split(std::string_view text, std::vector<Span>& out) const {
  if (text.empty()) return;
  if (steps_.empty()) {
    out.push_back({0, text.size()});
    return;
  }
  thread_local std::vector<Span> a, b;
  a.clear();
  a.push_back({0, text.size()});
  for (size_t i = 0; i < steps_.size(); ++i) {
    std::vector<Span>& dst = (i + 1 == steps_.size()) ? out : b;
    if (&dst == &b) b.clear();
    steps_[i]->apply(text, a, dst);
    if (&dst == &b) std::swap(a, b);
  }
}

}  // namespace deepmoe
