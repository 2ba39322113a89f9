#include "grammar/gbnf_parser.h"

#include <map>
#include <string>

#include "core/error.h"
#include "grammar/code_point_set.h"

namespace deepmoe::grammar {

namespace {

class GbnfParser {
 public:
  GbnfParser(std::string_view text, GrammarLimits limits) : text_(text), builder_(limits) {}

  Grammar parse() {
    skip_space(true);
    while (pos_ < text_.size()) {
      size_t name_start = pos_;
      std::string name = parse_name();
      skip_space(false);
      if (text_.substr(pos_, 3) != "::=") fail("expected '::=' after rule name '" + name + "'");
      pos_ += 3;
      skip_space(true);
      uint32_t rule = rule_id(name);
      if (defined_[name]) fail_at(name_start, "rule '" + name + "' is defined twice");
      defined_[name] = true;
      builder_.set_alternatives(rule, parse_alternatives(false));
      if (pos_ < text_.size() && text_[pos_] != '\n' && text_[pos_] != '\r')
        fail("unexpected '" + std::string(1, text_[pos_]) + "'");
      skip_space(true);
    }
    for (auto& [name, line] : first_use_)
      if (!defined_[name]) throw Error("gbnf: line " + std::to_string(line) + ": rule '" + name + "' is not defined");
    auto root = ids_.find("root");
    if (root == ids_.end()) throw Error("gbnf: no 'root' rule");
    return builder_.finish(root->second);
  }

 private:
  [[noreturn]] void fail(const std::string& what) { fail_at(pos_, what); }
  [[noreturn]] void fail_at(size_t at, const std::string& what) {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < at && i < text_.size(); ++i) {
      if (text_[i] == '\n') { ++line; col = 1; } else { ++col; }
    }
    throw Error("gbnf: line " + std::to_string(line) + ", column " + std::to_string(col) + ": " + what);
  }

  size_t line_of(size_t at) const {
    size_t line = 1;
    for (size_t i = 0; i < at && i < text_.size(); ++i) line += text_[i] == '\n';
    return line;
  }

  static bool is_word_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
  }

  void skip_space(bool newline_ok) {
    while (pos_ < text_.size()) {
      char c = text_[pos_];
      if (c == ' ' || c == '\t') { ++pos_; continue; }
      if (c == '#') {
        while (pos_ < text_.size() && text_[pos_] != '\n' && text_[pos_] != '\r') ++pos_;
        continue;
      }
      if (newline_ok && (c == '\n' || c == '\r')) { ++pos_; continue; }
      break;
    }
  }

  std::string parse_name() {
    size_t start = pos_;
    while (pos_ < text_.size() && is_word_char(text_[pos_])) ++pos_;
    if (pos_ == start) fail("expected a rule name");
    return std::string(text_.substr(start, pos_ - start));
  }

  uint32_t rule_id(const std::string& name) {
    auto it = ids_.find(name);
    if (it != ids_.end()) return it->second;
    uint32_t id = builder_.declare(name);
    ids_.emplace(name, id);
    return id;
  }

  uint32_t hex_value(int digits) {
    uint32_t v = 0;
    for (int i = 0; i < digits; ++i) {
      if (pos_ >= text_.size()) fail("unfinished escape");
      char c = text_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= uint32_t(c - '0');
      else if (c >= 'a' && c <= 'f') v |= uint32_t(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= uint32_t(c - 'A' + 10);
      else fail("bad hex digit in escape");
    }
    return v;
  }

  // One code point of a literal or class (UTF-8 decoded; escapes resolved).
  uint32_t parse_char() {
    if (pos_ >= text_.size()) fail("unexpected end of grammar");
    unsigned char c = uint8_t(text_[pos_]);
    if (c == '\\') {
      ++pos_;
      if (pos_ >= text_.size()) fail("unfinished escape");
      char e = text_[pos_++];
      switch (e) {
        case 'x': return hex_value(2);
        case 'u': return hex_value(4);
        case 'U': return hex_value(8);
        case 't': return '\t';
        case 'r': return '\r';
        case 'n': return '\n';
        case '\\': case '"': case '[': case ']': case '-': case '^': return uint32_t(e);
        default: fail(std::string("unknown escape '\\") + e + "'");
      }
    }
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || pos_ + size_t(len) > text_.size()) fail("invalid UTF-8 in grammar");
    uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (int i = 1; i < len; ++i) {
      unsigned char cc = uint8_t(text_[pos_ + size_t(i)]);
      if ((cc & 0xC0) != 0x80) fail("invalid UTF-8 in grammar");
      cp = (cp << 6) | (cc & 0x3F);
    }
    pos_ += size_t(len);
    return cp;
  }

  Symbol class_symbol(const CodePointSet& set) {
    std::vector<Sequence> alts = utf8_alternatives(set, builder_);
    if (alts.size() == 1 && alts[0].size() == 1) return alts[0][0];
    return builder_.choice("class", std::move(alts));
  }

  std::vector<Sequence> parse_alternatives(bool nested) {
    std::vector<Sequence> alts;
    alts.push_back(parse_sequence(nested));
    while (true) {
      // An alternative may also continue on the next line when that line starts with '|'.
      size_t save = pos_;
      skip_space(true);
      if (pos_ >= text_.size() || text_[pos_] != '|') {
        pos_ = save;
        break;
      }
      ++pos_;
      skip_space(true);
      alts.push_back(parse_sequence(nested));
    }
    return alts;
  }

  Sequence parse_sequence(bool nested) {
    Sequence seq;
    size_t last_start = 0;  // where the last item begins in seq, for postfix operators
    while (pos_ < text_.size()) {
      char c = text_[pos_];
      if (c == '"') {
        ++pos_;
        std::string bytes;
        while (true) {
          if (pos_ >= text_.size()) fail("unterminated string literal");
          if (text_[pos_] == '"') { ++pos_; break; }
          append_utf8(bytes, parse_char());
        }
        if (bytes.empty()) {
          last_start = seq.size();
          seq.push_back(builder_.empty());
        } else {
          // The postfix applies to the whole literal: keep it as one item.
          last_start = seq.size();
          seq.push_back(bytes.size() == 1 ? builder_.byte(uint8_t(bytes[0])) : builder_.wrap("literal", builder_.literal(bytes)));
        }
      } else if (c == '[') {
        ++pos_;
        bool negate = pos_ < text_.size() && text_[pos_] == '^';
        if (negate) ++pos_;
        CodePointSet set;
        while (true) {
          if (pos_ >= text_.size()) fail("unterminated character class");
          if (text_[pos_] == ']') { ++pos_; break; }
          uint32_t lo = parse_char();
          uint32_t hi = lo;
          if (pos_ + 1 < text_.size() && text_[pos_] == '-' && text_[pos_ + 1] != ']') {
            ++pos_;
            hi = parse_char();
            if (hi < lo) fail("character range out of order");
          }
          set.add(lo, hi);
        }
        last_start = seq.size();
        seq.push_back(class_symbol(negate ? set.complement() : set));
      } else if (c == '.') {
        ++pos_;
        CodePointSet any;
        any.add(0, kMaxCodePoint);
        last_start = seq.size();
        seq.push_back(class_symbol(any));
      } else if (is_word_char(c)) {
        size_t at = pos_;
        std::string name = parse_name();
        first_use_.emplace(name, line_of(at));
        last_start = seq.size();
        seq.push_back(Symbol::rule(rule_id(name)));
      } else if (c == '(') {
        ++pos_;
        if (++depth_ > kMaxNesting) fail("parentheses nested deeper than " + std::to_string(kMaxNesting));
        skip_space(true);
        std::vector<Sequence> alts = parse_alternatives(true);
        if (pos_ >= text_.size() || text_[pos_] != ')') fail("expected ')'");
        ++pos_;
        --depth_;
        last_start = seq.size();
        seq.push_back(builder_.choice("group", std::move(alts)));
      } else if (c == '*' || c == '+' || c == '?' || c == '{') {
        if (seq.empty()) fail(std::string("'") + c + "' with nothing before it");
        ++pos_;
        int64_t min = 0, max = -1;
        if (c == '+') min = 1;
        if (c == '?') max = 1;
        if (c == '{') {
          skip_space(false);
          min = parse_count();
          skip_space(false);
          max = min;
          if (pos_ < text_.size() && text_[pos_] == ',') {
            ++pos_;
            skip_space(false);
            max = (pos_ < text_.size() && text_[pos_] == '}') ? -1 : parse_count();
            skip_space(false);
          }
          if (pos_ >= text_.size() || text_[pos_] != '}') fail("expected '}'");
          ++pos_;
          if (max >= 0 && max < min) fail("repetition {m,n} with n < m");
        }
        Sequence item(seq.begin() + std::ptrdiff_t(last_start), seq.end());
        seq.resize(last_start);
        seq.push_back(builder_.repeat("repeat", item, min, max));
      } else {
        break;
      }
      skip_space(nested);
    }
    return seq;
  }

  int64_t parse_count() {
    size_t start = pos_;
    int64_t v = 0;
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
      v = v * 10 + (text_[pos_++] - '0');
      if (v > 1'000'000) fail("repetition count over 1000000");
    }
    if (pos_ == start) fail("expected a number");
    return v;
  }

  static constexpr int kMaxNesting = 1000;
  std::string_view text_;
  size_t pos_ = 0;
  int depth_ = 0;
  GrammarBuilder builder_;
  std::map<std::string, uint32_t> ids_;
  std::map<std::string, bool> defined_;
  std::map<std::string, size_t> first_use_;
};

}  // namespace

Grammar parse_gbnf(std::string_view text, GrammarLimits limits) { return GbnfParser(text, limits).parse(); }

}  // namespace deepmoe::grammar
