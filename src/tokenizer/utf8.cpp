#include "tokenizer/utf8.h"

namespace deepmoe::utf8 {
namespace {

// Allowed range of the second byte for a lead byte (Unicode Table 3-7); later bytes are always 80..BF.
struct LeadInfo {
  int length;  // 0 = not a lead byte
  uint8_t lo, hi;
};

LeadInfo lead_info(uint8_t b) {
  if (b < 0x80) return {1, 0, 0};
  if (b >= 0xC2 && b <= 0xDF) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) return {3, 0x80, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b >= 0xF1 && b <= 0xF3) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

// Number of bytes of s matching a well-formed sequence's prefix (at most its full length).
size_t valid_prefix(std::string_view s, int* full_length) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  LeadInfo info = lead_info(p[0]);
  *full_length = info.length;
  if (info.length <= 1) return info.length;
  size_t n = 1;
  if (n < s.size() && p[1] >= info.lo && p[1] <= info.hi) {
    ++n;
    while (n < static_cast<size_t>(info.length) && n < s.size() && (p[n] & 0xC0) == 0x80) ++n;
  }
  return n;
}

}  // namespace

size_t decode(std::string_view s, uint32_t* cp) {
  if (s.empty()) return 0;
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  if (p[0] < 0x80) {
    *cp = p[0];
    return 1;
  }
  int full = 0;
  size_t n = valid_prefix(s, &full);
  if (full == 0 || n != static_cast<size_t>(full)) return 0;
  uint32_t c = p[0] & (0x7F >> full);
  for (size_t i = 1; i < n; ++i) c = (c << 6) | (p[i] & 0x3F);
  *cp = c;
  return n;
}

size_t maximal_subpart(std::string_view s) {
  if (s.empty()) return 0;
  int full = 0;
  size_t n = valid_prefix(s, &full);
  return n == 0 ? 1 : n;
}

bool is_valid(std::string_view s) {
  size_t i = 0;
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  while (i < s.size()) {
    // ASCII fast path, 8 bytes at a time.
    while (i + 8 <= s.size()) {
      uint64_t w;
      __builtin_memcpy(&w, p + i, 8);
      if (w & 0x8080808080808080ULL) break;
      i += 8;
    }
    if (i >= s.size()) break;
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    uint32_t cp;
    size_t n = decode(s.substr(i), &cp);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string repair(std::string_view s) {
  if (is_valid(s)) return std::string(s);
  std::string out;
  out.reserve(s.size() + 16);
  size_t i = 0;
  while (i < s.size()) {
    uint32_t cp;
    size_t n = decode(s.substr(i), &cp);
    if (n > 0) {
      out.append(s.data() + i, n);
      i += n;
    } else {
      out.append("\xEF\xBF\xBD");
      i += maximal_subpart(s.substr(i));
    }
  }
  return out;
}

size_t incomplete_tail(std::string_view s) {
  // A proper prefix of a sequence is at most 3 bytes long: look at the last 3 positions for its lead byte.
  for (size_t back = 1; back <= 3 && back <= s.size(); ++back) {
    size_t start = s.size() - back;
    auto b = static_cast<uint8_t>(s[start]);
    if ((b & 0xC0) == 0x80) continue;  // continuation byte: the lead is further back
    int full = 0;
    size_t n = valid_prefix(s.substr(start), &full);
    return (full > 1 && n == back && n < static_cast<size_t>(full)) ? back : 0;
  }
  return 0;
}

void append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace deepmoe::utf8
