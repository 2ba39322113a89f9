#include "grammar/json_string_pattern.h"

#include <string>

#include "core/error.h"

namespace deepmoe::grammar {

CodePointSet any_code_point() {
  CodePointSet s;
  s.add(0, kMaxCodePoint);
  return s;
}

namespace {

std::string json_escape(uint32_t cp) {
  switch (cp) {
    case '"': return "\\\"";
    case '\\': return "\\\\";
    case '\b': return "\\b";
    case '\f': return "\\f";
    case '\n': return "\\n";
    case '\r': return "\\r";
    case '\t': return "\\t";
    default: {
      char buf[8];
      snprintf(buf, sizeof buf, "\\u%04x", cp);
      return buf;
    }
  }
}

bool needs_escape(uint32_t cp) { return cp < 0x20 || cp == '"' || cp == '\\'; }

}  // namespace

Symbol json_char_in(const CodePointSet& set, GrammarBuilder& builder) {
  CodePointSet raw;
  std::vector<uint32_t> escaped;
  for (auto [lo, hi] : set.ranges()) {
    for (uint32_t cp = lo; cp <= hi && cp < 0x80; ++cp)
      if (needs_escape(cp)) escaped.push_back(cp);
  }
  CodePointSet special;
  special.add(0, 0x1F);
  special.add('"');
  special.add('\\');
  // raw = set ∩ ¬special
  CodePointSet not_set = set.complement();
  CodePointSet excluded = not_set;
  excluded.add(special);
  raw = excluded.complement();
  std::vector<Sequence> alts = utf8_alternatives(raw, builder);
  // The escapes as one byte trie behind a single backslash, not one alternative each: a string's
  // configuration then holds one stack for all of them instead of thirty-odd.
  if (!escaped.empty()) {
    std::vector<std::string> spellings;
    for (uint32_t cp : escaped) spellings.push_back(json_escape(cp));
    alts.push_back({builder.literal_set("escape", spellings)});
  }
  if (alts.size() == 1 && alts[0].size() == 1) return alts[0][0];
  return builder.choice("char", std::move(alts));
}

namespace {

class PatternCompiler {
 public:
  PatternCompiler(std::string_view pattern, GrammarBuilder& b) : p_(pattern), b_(b) {}

  Symbol compile() {
    std::vector<Sequence> alts;
    Symbol any_star = b_.repeat("pattern-any", {json_char_in(any_code_point(), b_)}, 0, -1);
    while (true) {
      bool anchored_start = false, anchored_end = false;
      if (pos_ < p_.size() && p_[pos_] == '^') { anchored_start = true; ++pos_; }
      Sequence seq = parse_sequence(true, &anchored_end);
      Sequence full;
      if (!anchored_start) full.push_back(any_star);
      full.insert(full.end(), seq.begin(), seq.end());
      if (!anchored_end) full.push_back(any_star);
      alts.push_back(std::move(full));
      if (pos_ < p_.size() && p_[pos_] == '|') { ++pos_; continue; }
      break;
    }
    if (pos_ != p_.size()) fail("unbalanced ')'");
    return b_.choice("pattern", std::move(alts));
  }

 private:
  [[noreturn]] void fail(const std::string& what) {
    throw Error("pattern '" + std::string(p_) + "': " + what + " (at offset " + std::to_string(pos_) + ")");
  }

  bool at(char c) const { return pos_ < p_.size() && p_[pos_] == c; }

  uint32_t next_code_point() {
    unsigned char c = uint8_t(p_[pos_]);
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || pos_ + size_t(len) > p_.size()) fail("invalid UTF-8");
    uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (int i = 1; i < len; ++i) cp = (cp << 6) | (uint8_t(p_[pos_ + size_t(i)]) & 0x3F);
    pos_ += size_t(len);
    return cp;
  }

  uint32_t hex(int digits) {
    uint32_t v = 0;
    for (int i = 0; i < digits; ++i) {
      if (pos_ >= p_.size()) fail("unfinished escape");
      char c = p_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= uint32_t(c - '0');
      else if (c >= 'a' && c <= 'f') v |= uint32_t(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= uint32_t(c - 'A' + 10);
      else fail("bad hex digit");
    }
    return v;
  }

  static CodePointSet digits() { CodePointSet s; s.add('0', '9'); return s; }
  static CodePointSet word() { CodePointSet s; s.add('a', 'z'); s.add('A', 'Z'); s.add('0', '9'); s.add('_'); return s; }
  static CodePointSet space() {
    CodePointSet s;
    s.add('\t', '\r');
    s.add(' ');
    s.add(0xA0);
    s.add(0x1680);
    s.add(0x2000, 0x200A);
    s.add(0x2028, 0x2029);
    s.add(0x202F);
    s.add(0x205F);
    s.add(0x3000);
    s.add(0xFEFF);
    return s;
  }

  // After a backslash: a class escape (sets *is_set) or one code point.
  CodePointSet parse_escape(bool in_class) {
    if (pos_ >= p_.size()) fail("pattern ends with '\\'");
    char e = p_[pos_++];
    CodePointSet s;
    switch (e) {
      case 'd': return digits();
      case 'D': return digits().complement();
      case 'w': return word();
      case 'W': return word().complement();
      case 's': return space();
      case 'S': return space().complement();
      case 'n': s.add('\n'); return s;
      case 'r': s.add('\r'); return s;
      case 't': s.add('\t'); return s;
      case 'f': s.add('\f'); return s;
      case 'v': s.add('\v'); return s;
      case '0': s.add(0); return s;
      case 'x': s.add(hex(2)); return s;
      case 'u':
        if (at('{')) fail("\\u{...} escapes are not supported");
        s.add(hex(4));
        return s;
      case 'b':
        if (in_class) { s.add('\b'); return s; }
        fail("word boundary \\b is not supported");
      case 'B': fail("\\B is not supported");
      case 'p': case 'P': fail("Unicode property escapes are not supported");
      case 'c': fail("control escapes \\c are not supported");
      case 'k': fail("named backreferences are not supported");
      default:
        if (e >= '1' && e <= '9') fail("backreferences are not supported");
        if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z')) fail(std::string("unknown escape \\") + e);
        --pos_;
        s.add(next_code_point());
        return s;
    }
  }

  CodePointSet parse_class() {
    // at '[' already consumed
    bool negate = at('^');
    if (negate) ++pos_;
    CodePointSet set;
    bool first = true;
    while (true) {
      if (pos_ >= p_.size()) fail("unterminated character class");
      if (p_[pos_] == ']' && !(first && false)) { ++pos_; break; }
      first = false;
      CodePointSet lo_set;
      bool single = true;
      uint32_t lo = 0;
      if (p_[pos_] == '\\') {
        ++pos_;
        lo_set = parse_escape(true);
        single = lo_set.ranges().size() == 1 && lo_set.ranges()[0].first == lo_set.ranges()[0].second;
        if (single) lo = lo_set.ranges()[0].first;
      } else {
        lo = next_code_point();
        lo_set.add(lo);
      }
      if (single && at('-') && pos_ + 1 < p_.size() && p_[pos_ + 1] != ']') {
        ++pos_;
        uint32_t hi;
        if (p_[pos_] == '\\') {
          ++pos_;
          CodePointSet h = parse_escape(true);
          if (h.ranges().size() != 1 || h.ranges()[0].first != h.ranges()[0].second) fail("class range ends in a class");
          hi = h.ranges()[0].first;
        } else {
          hi = next_code_point();
        }
        if (hi < lo) fail("character range out of order");
        set.add(lo, hi);
      } else {
        set.add(lo_set);
      }
    }
    return negate ? set.complement() : set;
  }

  Sequence parse_sequence(bool top, bool* anchored_end) {
    Sequence seq;
    while (pos_ < p_.size()) {
      char c = p_[pos_];
      if (c == '|' || c == ')') break;
      Symbol atom{};
      if (c == '$') {
        ++pos_;
        if (!top || !(pos_ == p_.size() || at('|'))) fail("'$' is supported only at the end of an alternative");
        *anchored_end = true;
        break;
      } else if (c == '^') {
        fail("'^' is supported only at the start of an alternative");
      } else if (c == '(') {
        ++pos_;
        if (++depth_ > 200) fail("groups nested deeper than 200");
        if (at('?')) {
          ++pos_;
          if (at(':')) ++pos_;
          else if (at('<') && pos_ + 1 < p_.size() && p_[pos_ + 1] != '=' && p_[pos_ + 1] != '!') {
            while (pos_ < p_.size() && p_[pos_] != '>') ++pos_;
            if (pos_ >= p_.size()) fail("unterminated group name");
            ++pos_;
          } else fail("lookaround assertions are not supported");
        }
        std::vector<Sequence> alts;
        bool dummy = false;
        while (true) {
          alts.push_back(parse_sequence(false, &dummy));
          if (at('|')) { ++pos_; continue; }
          break;
        }
        if (!at(')')) fail("missing ')'");
        ++pos_;
        --depth_;
        atom = b_.choice("group", std::move(alts));
      } else if (c == '[') {
        ++pos_;
        atom = json_char_in(parse_class(), b_);
      } else if (c == '.') {
        ++pos_;
        CodePointSet line_terminators;
        line_terminators.add('\n');
        line_terminators.add('\r');
        line_terminators.add(0x2028, 0x2029);
        atom = json_char_in(line_terminators.complement(), b_);
      } else if (c == '\\') {
        ++pos_;
        atom = json_char_in(parse_escape(false), b_);
      } else if (c == '*' || c == '+' || c == '?' || c == '{') {
        if (c == '{' && !looks_like_quantifier()) {
          ++pos_;
          CodePointSet s;
          s.add('{');
          atom = json_char_in(s, b_);
        } else {
          fail("quantifier with nothing to repeat");
        }
      } else {
        CodePointSet s;
        s.add(next_code_point());
        atom = json_char_in(s, b_);
      }
      // quantifier
      if (pos_ < p_.size()) {
        char q = p_[pos_];
        int64_t min = 1, max = 1;
        bool quantified = true;
        if (q == '*') { min = 0; max = -1; ++pos_; }
        else if (q == '+') { min = 1; max = -1; ++pos_; }
        else if (q == '?') { min = 0; max = 1; ++pos_; }
        else if (q == '{' && looks_like_quantifier()) {
          ++pos_;
          min = parse_int();
          max = min;
          if (at(',')) {
            ++pos_;
            max = at('}') ? -1 : parse_int();
          }
          if (!at('}')) fail("bad quantifier");
          ++pos_;
          if (max >= 0 && max < min) fail("quantifier {m,n} with n < m");
        } else quantified = false;
        if (quantified) {
          if (at('?')) ++pos_;  // lazy: same language
          if (at('*') || at('+') || at('?') || (at('{') && looks_like_quantifier())) fail("nothing to repeat");
          atom = b_.repeat("pattern-repeat", {atom}, min, max);
        }
      }
      seq.push_back(atom);
    }
    return seq;
  }

  bool looks_like_quantifier() const {
    size_t i = pos_ + 1;
    size_t d = i;
    while (i < p_.size() && p_[i] >= '0' && p_[i] <= '9') ++i;
    if (i == d) return false;
    if (i < p_.size() && p_[i] == '}') return true;
    if (i < p_.size() && p_[i] == ',') {
      ++i;
      while (i < p_.size() && p_[i] >= '0' && p_[i] <= '9') ++i;
      return i < p_.size() && p_[i] == '}';
    }
    return false;
  }

  int64_t parse_int() {
    int64_t v = 0;
    size_t start = pos_;
    while (pos_ < p_.size() && p_[pos_] >= '0' && p_[pos_] <= '9') {
      v = v * 10 + (p_[pos_++] - '0');
      if (v > 100000) fail("repetition count over 100000");
    }
    if (pos_ == start) fail("expected a number");
    return v;
  }

  std::string_view p_;
  size_t pos_ = 0;
  int depth_ = 0;
  GrammarBuilder& b_;
};

}  // namespace

Symbol compile_string_pattern(std::string_view pattern, GrammarBuilder& builder) {
  return PatternCompiler(pattern, builder).compile();
}

}  // namespace deepmoe::grammar
