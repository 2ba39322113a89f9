// Internal state of Tokenizer, shared by tokenizer.cpp (encode/decode) and tokenizer_loader.cpp (tokenizer.json).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe_model.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/token_index.h"
#include "tokenizer/tokenizer.h"

namespace deepmoe {

struct Tokenizer::Impl {
  std::vector<std::string> bytes;   // id -> raw bytes it decodes to
  std::vector<std::string> pieces;  // id -> spelling in tokenizer.json
  std::vector<uint8_t> special;     // id -> special added token
  TokenIndex piece_to_id;  // vocab and added tokens
  std::unique_ptr<BpeModel> bpe;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  AddedTokenMatcher added;
  int32_t bos = -1, eos = -1;
  std::vector<int32_t> prefix, suffix;  // ids add_special puts around the text
};

}  // namespace deepmoe
