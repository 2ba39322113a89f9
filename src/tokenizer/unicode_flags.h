// Unicode character properties the tokenizer needs outside the regex engine (the hand-written pre-tokenizer,
// added-token word/space checks). General categories come from PCRE2's own Unicode tables, read into a lookup
// table block by block as code points are first met, so the hand-written splitter classifies every code point
// exactly as the regex path does. Thread-safe.
#pragma once

#include <cstdint>

namespace deepmoe {

enum UnicodeFlag : uint16_t {
  kUnicodeLetter = 1 << 0,     // \p{L}
  kUnicodeMark = 1 << 1,       // \p{M}
  kUnicodeNumber = 1 << 2,     // \p{N}
  kUnicodeDecimal = 1 << 3,    // \p{Nd}
  kUnicodePunct = 1 << 4,      // \p{P}
  kUnicodeConnector = 1 << 5,  // \p{Pc}
  kUnicodeSymbol = 1 << 6,     // \p{S}
  kUnicodeRegexSpace = 1 << 7,  // \s of the regex engine (PCRE2, UCP mode)
};

// Bitwise OR of UnicodeFlag for code point cp (0 for cp > 0x10FFFF or a surrogate).
uint16_t unicode_flags(uint32_t cp);

// Unicode White_Space property (PropList.txt), what Rust's regex \s matches.
bool unicode_is_white_space(uint32_t cp);

}  // namespace deepmoe
