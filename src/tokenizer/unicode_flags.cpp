#include "tokenizer/unicode_flags.h"

#include <memory>
#include <string>
#include <vector>

#include "tokenizer/regex.h"
#include "tokenizer/utf8.h"

namespace deepmoe {
namespace {

constexpr uint32_t kCodePoints = 0x110000;

// Builds the table by running each property's regex over one string holding every scalar value: one JIT pass
// per property (tens of milliseconds in all), instead of a per-code-point query.
std::vector<uint16_t> build_table() {
  std::vector<uint16_t> table(kCodePoints, 0);
  std::string all;
  all.reserve(4 * kCodePoints);
  for (uint32_t cp = 0; cp < kCodePoints; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    utf8::append(all, cp);
  }
  struct Property {
    const char* pattern;
    uint16_t flag;
  };
  const Property properties[] = {
      {R"(\p{L}+)", kUnicodeLetter},  {R"(\p{M}+)", kUnicodeMark},       {R"(\p{N}+)", kUnicodeNumber},
      {R"(\p{Nd}+)", kUnicodeDecimal}, {R"(\p{P}+)", kUnicodePunct},      {R"(\p{Pc}+)", kUnicodeConnector},
      {R"(\p{S}+)", kUnicodeSymbol},  {R"(\s+)", kUnicodeRegexSpace},
  };
  std::vector<std::pair<size_t, size_t>> matches;
  for (const Property& p : properties) {
    Regex regex(p.pattern);
    matches.clear();
    regex.find_all(all, matches);
    for (auto [b, e] : matches) {
      size_t i = b;
      while (i < e) {
        uint32_t cp = 0;
        size_t n = utf8::decode(std::string_view(all).substr(i), &cp);
        table[cp] |= p.flag;
        i += n;
      }
    }
  }
  return table;
}

const std::vector<uint16_t>& table() {
  static const std::vector<uint16_t> t = build_table();
  return t;
}

}  // namespace

uint16_t unicode_flags(uint32_t cp) { return cp < kCodePoints ? table()[cp] : 0; }

bool unicode_is_white_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

}  // namespace deepmoe
