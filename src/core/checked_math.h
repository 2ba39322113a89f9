// Overflow-checked size arithmetic for every number read from a file or request before it sizes an
// allocation or indexes memory (reliability.md §1).
#pragma once

#include <cstdint>
#include <optional>

namespace deepmoe {

inline std::optional<uint64_t> checked_mul(uint64_t a, uint64_t b) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

inline std::optional<uint64_t> checked_add(uint64_t a, uint64_t b) {
  uint64_t r;
  if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}

}  // namespace deepmoe
