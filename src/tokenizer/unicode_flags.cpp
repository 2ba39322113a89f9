#include "tokenizer/unicode_flags.h"

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tokenizer/regex.h"
#include "tokenizer/utf8.h"

namespace deepmoe {
namespace {

constexpr uint32_t kCodePoints = 0x110000;
constexpr uint32_t kBlockBits = 8;  // blocks of 256 code points
constexpr uint32_t kBlocks = kCodePoints >> kBlockBits;

// The flags of a block are computed the first time a code point in it is asked for (building the whole
// table — eight regex passes over a string of all 1.1M scalar values — cost ~60 ms of every tokenizer load;
// a text touches a few dozen blocks). A block is found by running each property's regex over a string of its
// code points, so the flags are exactly what PCRE2 (the regex path) says.
struct Properties {
  struct Property {
    Regex regex;
    uint16_t flag;
  };
  Property list[8] = {
      {Regex(R"(\p{L}+)"), kUnicodeLetter},  {Regex(R"(\p{M}+)"), kUnicodeMark},
      {Regex(R"(\p{N}+)"), kUnicodeNumber},  {Regex(R"(\p{Nd}+)"), kUnicodeDecimal},
      {Regex(R"(\p{P}+)"), kUnicodePunct},   {Regex(R"(\p{Pc}+)"), kUnicodeConnector},
      {Regex(R"(\p{S}+)"), kUnicodeSymbol},  {Regex(R"(\s+)"), kUnicodeRegexSpace},
  };
};

std::unique_ptr<uint16_t[]> build_block(uint32_t block) {
  static const Properties properties;
  auto flags = std::make_unique<uint16_t[]>(1u << kBlockBits);  // zeroed
  const uint32_t first = block << kBlockBits;
  std::string text;
  text.reserve(4u << kBlockBits);
  for (uint32_t cp = first; cp < first + (1u << kBlockBits); ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;  // surrogates are not scalar values: flags 0
    utf8::append(text, cp);
  }
  std::vector<std::pair<size_t, size_t>> matches;
  for (const auto& p : properties.list) {
    matches.clear();
    p.regex.find_all(text, matches);
    for (auto [b, e] : matches) {
      size_t i = b;
      while (i < e) {
        uint32_t cp = 0;
        i += utf8::decode(std::string_view(text).substr(i), &cp);
        flags[cp - first] |= p.flag;
      }
    }
  }
  return flags;
}

struct Table {
  std::atomic<const uint16_t*> blocks[kBlocks] = {};
  std::mutex build_mutex;
  std::vector<std::unique_ptr<uint16_t[]>> owned;  // under build_mutex

  const uint16_t* block(uint32_t b) {
    if (const uint16_t* p = blocks[b].load(std::memory_order_acquire)) return p;
    std::lock_guard<std::mutex> lock(build_mutex);
    if (const uint16_t* p = blocks[b].load(std::memory_order_relaxed)) return p;  // built meanwhile
    owned.push_back(build_block(b));
    blocks[b].store(owned.back().get(), std::memory_order_release);
    return owned.back().get();
  }
};

Table& table() {
  static Table t;
  return t;
}

}  // namespace

uint16_t unicode_flags(uint32_t cp) {
  if (cp >= kCodePoints) return 0;
  return table().block(cp >> kBlockBits)[cp & ((1u << kBlockBits) - 1)];
}

bool unicode_is_white_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

}  // namespace deepmoe
