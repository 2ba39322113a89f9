#include "grammar/code_point_set.h"

#include <algorithm>
#include <string>

namespace deepmoe::grammar {

void CodePointSet::add(uint32_t lo, uint32_t hi) {
  if (lo > hi) return;
  hi = std::min(hi, kMaxCodePoint);
  if (lo > hi) return;
  ranges_.push_back({lo, hi});
  normalized_ = false;
}

void CodePointSet::add(const CodePointSet& other) {
  for (auto r : other.ranges()) add(r.first, r.second);
}

const std::vector<std::pair<uint32_t, uint32_t>>& CodePointSet::ranges() const {
  if (normalized_) return ranges_;
  std::vector<std::pair<uint32_t, uint32_t>> in;
  // remove surrogates
  for (auto [lo, hi] : ranges_) {
    if (hi < 0xD800 || lo > 0xDFFF) { in.push_back({lo, hi}); continue; }
    if (lo < 0xD800) in.push_back({lo, 0xD7FF});
    if (hi > 0xDFFF) in.push_back({0xE000, hi});
  }
  std::sort(in.begin(), in.end());
  std::vector<std::pair<uint32_t, uint32_t>> out;
  for (auto r : in) {
    if (!out.empty() && r.first <= out.back().second + 1) out.back().second = std::max(out.back().second, r.second);
    else out.push_back(r);
  }
  ranges_ = std::move(out);
  normalized_ = true;
  return ranges_;
}

bool CodePointSet::contains(uint32_t cp) const {
  for (auto [lo, hi] : ranges())
    if (cp >= lo && cp <= hi) return true;
  return false;
}

CodePointSet CodePointSet::complement() const {
  CodePointSet out;
  uint32_t next = 0;
  for (auto [lo, hi] : ranges()) {
    if (lo > next) out.add(next, lo - 1);
    next = hi + 1;
  }
  if (next <= kMaxCodePoint) out.add(next, kMaxCodePoint);
  return out;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(char(cp));
  } else if (cp < 0x800) {
    out.push_back(char(0xC0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(char(0xE0 | (cp >> 12)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (cp >> 18)));
    out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  }
}

namespace {
// RE2's construction: split [lo, hi] until both ends share every byte but the varying tail, then each byte
// position is one range.
void split_range(uint32_t lo, uint32_t hi, std::vector<std::vector<std::pair<uint8_t, uint8_t>>>& out) {
  if (lo > hi) return;
  static constexpr uint32_t kLengthLimits[] = {0x7F, 0x7FF, 0xFFFF};
  for (uint32_t limit : kLengthLimits) {
    if (lo <= limit && hi > limit) {
      split_range(lo, limit, out);
      split_range(limit + 1, hi, out);
      return;
    }
  }
  if (hi < 0x80) {
    out.push_back({{uint8_t(lo), uint8_t(hi)}});
    return;
  }
  for (int i = 1; i < 4; ++i) {
    uint32_t m = (uint32_t(1) << (6 * i)) - 1;
    if ((lo & ~m) != (hi & ~m)) {
      if ((lo & m) != 0) {
        split_range(lo, lo | m, out);
        split_range((lo | m) + 1, hi, out);
        return;
      }
      if ((hi & m) != m) {
        split_range(lo, (hi & ~m) - 1, out);
        split_range(hi & ~m, hi, out);
        return;
      }
    }
  }
  std::string a, b;
  append_utf8(a, lo);
  append_utf8(b, hi);
  std::vector<std::pair<uint8_t, uint8_t>> seq;
  for (size_t i = 0; i < a.size(); ++i) seq.push_back({uint8_t(a[i]), uint8_t(b[i])});
  out.push_back(std::move(seq));
}
}  // namespace

std::vector<Sequence> utf8_alternatives(const CodePointSet& set, GrammarBuilder& builder) {
  std::vector<std::vector<std::pair<uint8_t, uint8_t>>> pieces;
  for (auto [lo, hi] : set.ranges()) split_range(lo, hi, pieces);
  // Merge single-byte pieces into one byte set.
  ByteSet ascii;
  std::vector<Sequence> alts;
  for (const auto& p : pieces) {
    if (p.size() == 1) {
      ascii |= ByteSet::range(p[0].first, p[0].second);
      continue;
    }
    Sequence seq;
    for (auto [a, b] : p) seq.push_back(builder.bytes(ByteSet::range(a, b)));
    alts.push_back(std::move(seq));
  }
  if (!ascii.empty()) alts.insert(alts.begin(), Sequence{builder.bytes(ascii)});
  return alts;
}

}  // namespace deepmoe::grammar
