// UTF-8 helpers for the tokenizer: validation, lossy repair and code point decoding.
//
// Invalid input follows the "maximal subpart" practice of Unicode §3.9 (U+FFFD substitution), which is what
// Python's bytes.decode("utf-8", errors="replace") and Rust's String::from_utf8_lossy do: every maximal prefix
// of a well-formed sequence that cannot be completed becomes one U+FFFD, and decoding resumes at the byte that
// broke it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace deepmoe::utf8 {

// Length of the well-formed sequence starting at s[0], and its code point in *cp; 0 if s does not start with
// one (invalid byte, or a sequence cut short by a bad byte or the end of s).
size_t decode(std::string_view s, uint32_t* cp);

// Number of bytes of s[0..] that form the longest prefix of some well-formed sequence (1 for a lone invalid
// byte). Used to find the maximal subpart that one U+FFFD replaces.
size_t maximal_subpart(std::string_view s);

bool is_valid(std::string_view s);

// s with every maximal ill-formed subpart replaced by U+FFFD (EF BF BD); s itself when already valid.
std::string repair(std::string_view s);

// Length of the trailing bytes of s that are a proper prefix of a well-formed sequence and so may still be
// completed by later bytes (0..3). Streaming decoders hold these back.
size_t incomplete_tail(std::string_view s);

// Appends the UTF-8 encoding of cp (cp must be a Unicode scalar value).
void append(std::string& out, uint32_t cp);

}  // namespace deepmoe::utf8
