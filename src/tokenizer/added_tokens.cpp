#include "tokenizer/added_tokens.h"

#include "tokenizer/unicode_flags.h"
#include "tokenizer/utf8.h"

namespace deepmoe {
namespace {

// Rust regex \w (Unicode word character): letters, marks, decimal digits, connector punctuation.
bool is_word_char(uint32_t cp) {
  return (unicode_flags(cp) & (kUnicodeLetter | kUnicodeMark | kUnicodeDecimal | kUnicodeConnector)) != 0;
}

uint32_t last_code_point(std::string_view s) {
  size_t i = s.size();
  while (i > 0 && (static_cast<uint8_t>(s[i - 1]) & 0xC0) == 0x80) --i;
  if (i > 0) --i;
  uint32_t cp = 0;
  return utf8::decode(s.substr(i), &cp) ? cp : 0xFFFD;
}

uint32_t first_code_point(std::string_view s) {
  uint32_t cp = 0;
  return utf8::decode(s, &cp) ? cp : 0xFFFD;
}

// Byte length of the whitespace run ending at the end of s / starting at the start of s (Rust \s).
size_t trailing_space(std::string_view s) {
  size_t n = s.size();
  while (n > 0) {
    size_t i = n - 1;
    while (i > 0 && (static_cast<uint8_t>(s[i]) & 0xC0) == 0x80) --i;
    uint32_t cp = 0;
    if (!utf8::decode(s.substr(i, n - i), &cp) || !unicode_is_white_space(cp)) break;
    n = i;
  }
  return s.size() - n;
}

size_t leading_space(std::string_view s) {
  size_t n = 0;
  while (n < s.size()) {
    uint32_t cp = 0;
    size_t len = utf8::decode(s.substr(n), &cp);
    if (!len || !unicode_is_white_space(cp)) break;
    n += len;
  }
  return n;
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedToken> tokens) : tokens_(std::move(tokens)) {
  nodes_.push_back(Node{});
  for (size_t t = 0; t < tokens_.size(); ++t) {
    const std::string& content = tokens_[t].content;
    if (content.empty()) continue;  // HF ignores empty added tokens
    int32_t node = 0;
    for (char ch : content) {
      auto b = static_cast<uint8_t>(ch);
      int32_t c = child(node, b);
      if (c < 0) {
        Node n;
        n.byte = b;
        n.next_sibling = nodes_[node].first_child;
        nodes_.push_back(n);
        c = static_cast<int32_t>(nodes_.size() - 1);
        nodes_[node].first_child = c;
      }
      node = c;
    }
    if (nodes_[node].token < 0) nodes_[node].token = static_cast<int32_t>(t);  // first definition wins
    first_byte_[static_cast<uint8_t>(content[0])] = true;
  }
}

int32_t AddedTokenMatcher::child(int32_t node, uint8_t byte) const {
  for (int32_t c = nodes_[node].first_child; c >= 0; c = nodes_[c].next_sibling)
    if (nodes_[c].byte == byte) return c;
  return -1;
}

void AddedTokenMatcher::split_pass(std::string_view text, size_t begin, size_t end, bool normalized_pass,
                                   bool parse_special, std::vector<Segment>& out) const {
  size_t start_offset = begin;  // end of the last emitted segment
  size_t pos = begin;
  while (pos < end) {
    if (!first_byte_[static_cast<uint8_t>(text[pos])]) {
      ++pos;
      continue;
    }
    // Longest token of this pass starting at pos.
    int32_t best = -1;
    size_t best_end = 0;
    int32_t node = 0;
    for (size_t i = pos; i < end; ++i) {
      node = child(node, static_cast<uint8_t>(text[i]));
      if (node < 0) break;
      int32_t t = nodes_[node].token;
      if (t >= 0 && tokens_[t].normalized == normalized_pass) {
        best = t;
        best_end = i + 1;
      }
    }
    if (best < 0) {
      ++pos;
      continue;
    }
    const AddedToken& tok = tokens_[best];
    size_t m_begin = pos, m_end = best_end;
    pos = best_end;  // like aho-corasick find_iter, the search resumes after this match even if discarded
    // HF (encode_special_tokens) finds special tokens and then drops the match, so they stay plain text.
    if (tok.special && !parse_special) continue;
    if (tok.single_word) {
      bool start_ok = m_begin == begin || !is_word_char(last_code_point(text.substr(begin, m_begin - begin)));
      bool stop_ok = m_end == end || !is_word_char(first_code_point(text.substr(m_end, end - m_end)));
      if (!start_ok || !stop_ok) continue;
    }
    if (tok.lstrip) {
      size_t stripped = m_begin - trailing_space(text.substr(begin, m_begin - begin));
      m_begin = std::max(stripped, start_offset);
    }
    if (tok.rstrip) {
      m_end += leading_space(text.substr(m_end, end - m_end));
      pos = m_end;
    }
    if (start_offset < m_begin) out.push_back({start_offset, m_begin, -1});
    out.push_back({m_begin, m_end, tok.id});
    start_offset = m_end;
  }
  if (start_offset < end) out.push_back({start_offset, end, -1});
}

void AddedTokenMatcher::split(std::string_view text, bool parse_special, std::vector<Segment>& out) const {
  if (tokens_.empty()) {
    if (!text.empty()) out.push_back({0, text.size(), -1});
    return;
  }
  // Pass 1: non-normalized tokens on the raw text; pass 2: normalized tokens on the remaining plain segments.
  thread_local std::vector<Segment> first;
  first.clear();
  split_pass(text, 0, text.size(), /*normalized_pass=*/false, parse_special, first);
  for (const Segment& s : first) {
    if (s.id >= 0) {
      out.push_back(s);
    } else {
      split_pass(text, s.begin, s.end, /*normalized_pass=*/true, parse_special, out);
    }
  }
}

}  // namespace deepmoe
