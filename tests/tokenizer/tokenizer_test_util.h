// Shared helpers for the tokenizer tests: the bundled DeepSeek-V3 tokenizer and the golden files.
#pragma once

#include <memory>
#include <string>

#include "tokenizer/tokenizer.h"

namespace deepmoe::test {

inline std::string tokenizer_dir() { return std::string(DEEPMOE_TEST_DATA_DIR) + "/../../assets/tokenizer"; }
inline std::string golden_dir() { return std::string(DEEPMOE_TEST_DATA_DIR) + "/golden"; }

// Loaded once per test binary: parsing the 4 MB tokenizer.json takes a noticeable fraction of a second.
inline const Tokenizer& deepseek_tokenizer() {
  static std::unique_ptr<Tokenizer> tok = Tokenizer::load(tokenizer_dir());
  return *tok;
}

}  // namespace deepmoe::test
