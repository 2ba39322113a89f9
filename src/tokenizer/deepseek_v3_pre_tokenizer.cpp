#include "tokenizer/deepseek_v3_pre_tokenizer.h"

#include <cstring>

#include "tokenizer/unicode_flags.h"

namespace deepmoe {

const char* const DeepSeekV3PreTokenizer::kPatterns[3] = {
    "\\p{N}{1,3}",
    "[一-龥぀-ゟ゠-ヿ]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| "
    "?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
};

namespace {

// Per code point: the unicode_flags bits plus two of this pre-tokenizer's own.
constexpr uint16_t kCjk = 1 << 14;          // in [一-龥぀-ゟ゠-ヿ]
constexpr uint16_t kAsciiPunct = 1 << 15;  // in the first alternative's [!"#$%...~] set
constexpr uint16_t kLM = kUnicodeLetter | kUnicodeMark;
constexpr uint16_t kPS = kUnicodePunct | kUnicodeSymbol;

struct Cursor {
  const unsigned char* s;
  // Code point at byte i (text is valid UTF-8) and its length.
  inline uint32_t at(size_t i, size_t* len) const {
    unsigned char b = s[i];
    if (b < 0x80) {
      *len = 1;
      return b;
    }
    if (b < 0xE0) {
      *len = 2;
      return ((b & 0x1F) << 6) | (s[i + 1] & 0x3F);
    }
    if (b < 0xF0) {
      *len = 3;
      return ((b & 0x0F) << 12) | ((s[i + 1] & 0x3F) << 6) | (s[i + 2] & 0x3F);
    }
    *len = 4;
    return ((b & 0x07) << 18) | ((s[i + 1] & 0x3F) << 12) | ((s[i + 2] & 0x3F) << 6) | (s[i + 3] & 0x3F);
  }
};

struct AsciiTable {
  uint16_t flags[128];
  AsciiTable() {
    for (uint32_t c = 0; c < 128; ++c) {
      flags[c] = unicode_flags(c);
      if (std::strchr("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", static_cast<int>(c)) && c != 0) flags[c] |= kAsciiPunct;
    }
  }
};

inline uint16_t flags_of(uint32_t cp, const AsciiTable& ascii) {
  if (cp < 128) return ascii.flags[cp];
  uint16_t f = unicode_flags(cp);
  if ((cp >= 0x4E00 && cp <= 0x9FA5) || (cp >= 0x3040 && cp <= 0x30FF)) f |= kCjk;
  return f;
}

const AsciiTable& ascii_table() {
  static const AsciiTable t;
  return t;
}

inline bool is_ascii_letter(uint32_t c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }
inline bool is_crlf(uint32_t c) { return c == '\r' || c == '\n'; }

}  // namespace

DeepSeekV3PreTokenizer::DeepSeekV3PreTokenizer() { ascii_table(); }

bool DeepSeekV3PreTokenizer::matches(const std::vector<std::unique_ptr<PreTokenizerStep>>& steps) {
  if (steps.size() != 3) return false;
  for (size_t i = 0; i < 3; ++i) {
    auto* split = dynamic_cast<const SplitStep*>(steps[i].get());
    if (!split || split->literal() || split->invert() || split->behavior() != SplitBehavior::kIsolated ||
        split->pattern() != kPatterns[i])
      return false;
  }
  return true;
}

// Splits 1 and 2: digit groups of up to three code points and CJK runs are pieces of their own; everything
// between goes through split 3 (as do CJK runs, which may hold marks and punctuation such as U+30FB).
void DeepSeekV3PreTokenizer::split(std::string_view text, std::vector<Span>& out) const {
  const AsciiTable& ascii = ascii_table();
  Cursor cur{reinterpret_cast<const unsigned char*>(text.data())};
  size_t n = text.size();
  size_t i = 0;
  size_t other_begin = 0;  // start of the current run that is neither digits nor CJK
  while (i < n) {
    size_t len;
    uint32_t cp = cur.at(i, &len);
    uint16_t f = flags_of(cp, ascii);
    if (!(f & (kUnicodeNumber | kCjk))) {
      i += len;
      continue;
    }
    if (other_begin < i) split_words(text, other_begin, i, out);
    if (f & kUnicodeNumber) {
      // \p{N}{1,3}: greedy groups of three, left to right.
      size_t begin = i;
      int count = 0;
      while (i < n) {
        uint32_t c = cur.at(i, &len);
        if (!(flags_of(c, ascii) & kUnicodeNumber)) break;
        if (count == 3) {
          out.push_back({begin, i});
          begin = i;
          count = 0;
        }
        i += len;
        ++count;
      }
      out.push_back({begin, i});
    } else {
      size_t begin = i;
      while (i < n) {
        uint32_t c = cur.at(i, &len);
        uint16_t g = flags_of(c, ascii);
        if (!(g & kCjk) || (g & kUnicodeNumber)) break;
        i += len;
      }
      split_words(text, begin, i, out);
    }
    other_begin = i;
  }
  if (other_begin < n) split_words(text, other_begin, n, out);
}

// Split 3 on text[begin, end): at each position the alternatives are tried in order, as the regex does; a
// position where none matches joins the gap piece before the next match.
void DeepSeekV3PreTokenizer::split_words(std::string_view text, size_t begin, size_t end,
                                         std::vector<Span>& out) const {
  const AsciiTable& ascii = ascii_table();
  Cursor cur{reinterpret_cast<const unsigned char*>(text.data())};
  size_t gap_begin = begin;
  size_t i = begin;
  auto emit = [&](size_t match_end) {
    if (gap_begin < i) out.push_back({gap_begin, i});
    out.push_back({i, match_end});
    i = match_end;
    gap_begin = i;
  };
  // End of the run of code points with any of `mask` starting at j.
  auto run = [&](size_t j, uint16_t mask) {
    size_t len;
    while (j < end && (flags_of(cur.at(j, &len), ascii) & mask)) j += len;
    return j;
  };
  while (i < end) {
    size_t len0;
    uint32_t c0 = cur.at(i, &len0);
    uint16_t f0 = flags_of(c0, ascii);
    size_t j1 = i + len0;
    size_t len1 = 0;
    uint32_t c1 = j1 < end ? cur.at(j1, &len1) : 0;
    uint16_t f1 = j1 < end ? flags_of(c1, ascii) : 0;

    // 1. [!"#...~][A-Za-z]+
    if ((f0 & kAsciiPunct) && j1 < end && is_ascii_letter(c1)) {
      size_t j = j1;
      while (j < end && is_ascii_letter(static_cast<unsigned char>(text[j]))) ++j;
      emit(j);
      continue;
    }
    // 2. [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+ — with the optional char taken when a letter/mark follows it,
    // else (backtracking) the run starting at c0 itself.
    bool optional_ok = !is_crlf(c0) && !(f0 & (kUnicodeLetter | kPS));
    if (optional_ok && j1 < end && (f1 & kLM)) {
      emit(run(j1, kLM));
      continue;
    }
    if (f0 & kLM) {
      emit(run(i, kLM));
      continue;
    }
    // 3. " ?[\p{P}\p{S}]+[\r\n]*"
    if ((c0 == ' ' && j1 < end && (f1 & kPS)) || (f0 & kPS)) {
      size_t j = run(c0 == ' ' && !(f0 & kPS) ? j1 : i, kPS);
      while (j < end && is_crlf(static_cast<unsigned char>(text[j]))) ++j;
      emit(j);
      continue;
    }
    if (f0 & kUnicodeRegexSpace) {
      // The whitespace run [i, w) and its last CR/LF.
      size_t w = i, last_crlf = std::string_view::npos, len, count = 0;
      while (w < end) {
        uint32_t c = cur.at(w, &len);
        if (!(flags_of(c, ascii) & kUnicodeRegexSpace)) break;
        if (is_crlf(c)) last_crlf = w;
        w += len;
        ++count;
      }
      // 4. \s*[\r\n]+ : \s* backs off to the last CR/LF, which [\r\n]+ then takes (nothing after it is one).
      if (last_crlf != std::string_view::npos) {
        emit(last_crlf + 1);
        continue;
      }
      // 5. \s+(?!\S) : the whole run at the end of the piece, else all but its last code point.
      if (w == end) {
        emit(w);
        continue;
      }
      if (count >= 2) {
        size_t last = i, step;
        for (size_t k = i; k < w; k += step) {
          cur.at(k, &step);
          last = k;
        }
        emit(last);
        continue;
      }
      // 6. \s+
      emit(w);
      continue;
    }
    i = j1;  // no alternative matches here: part of a gap
  }
  if (gap_begin < end) out.push_back({gap_begin, end});
}

}  // namespace deepmoe
