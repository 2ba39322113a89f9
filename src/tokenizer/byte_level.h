// The byte-level alphabet of GPT-2 (openai/gpt-2 encoder.py bytes_to_unicode), used by HF's ByteLevel
// pre-tokenizer and decoder: every byte maps to one printable code point, so vocab strings in tokenizer.json
// spell raw bytes. Printable Latin-1 bytes (33..126, 161..172, 174..255) map to themselves; the other 68 bytes
// map to U+0100 + n in byte order.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace deepmoe::byte_level {

// Code point that stands for byte b.
uint32_t byte_to_char(uint8_t b);

// The byte that code point c stands for, if c is in the alphabet.
std::optional<uint8_t> char_to_byte(uint32_t c);

// Raw bytes spelled by a byte-level string; nullopt if it holds a character outside the alphabet (or is not
// valid UTF-8).
std::optional<std::string> decode(std::string_view text);

// Byte-level spelling (UTF-8) of raw bytes.
std::string encode(std::string_view bytes);

}  // namespace deepmoe::byte_level
