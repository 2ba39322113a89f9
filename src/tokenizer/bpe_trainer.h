// Training a byte-level BPE tokenizer on a text (HF tokenizers' BpeTrainer semantics): the text is cut into
// pieces by DeepSeek-V3's pre-tokenizer, every piece starts as its bytes, and the most frequent adjacent pair
// (over all pieces, weighted by how often each piece occurs) is merged into a new token until the vocabulary has
// the size asked for. The result is written as a tokenizer.json + tokenizer_config.json that Tokenizer::load
// reads: special tokens first (ids 0, 1, ... — BOS and EOS as in DeepSeek-V3), the 256 byte tokens, then one
// token per merge in merge order.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace deepmoe {

struct BpeTrainerOptions {
  int64_t vocab_size = 2048;  // special tokens + 256 bytes + merges
  // Added as special tokens with ids 0, 1, ...; the first two are BOS and EOS.
  std::vector<std::string> special_tokens = default_special_tokens();
  int64_t min_pair_count = 2;  // a pair seen fewer times is never merged (the vocabulary then stays smaller)

  // BOS, EOS and the markers DeepSeek-V3's chat template prints.
  static std::vector<std::string> default_special_tokens();
};

struct TrainedBpe {
  std::vector<std::string> specials;                           // ids 0 .. specials.size() - 1
  std::vector<std::pair<std::string, std::string>> merges;     // raw bytes of the two halves, in merge order
  int64_t pieces = 0;           // pre-tokenizer pieces in the text
  int64_t tokens = 0;           // tokens the text encodes to with the learned merges (no special tokens)
  int64_t text_bytes = 0;

  int64_t vocab_size() const { return int64_t(specials.size()) + 256 + int64_t(merges.size()); }
  // The tokenizer.json text (byte-level spellings, DeepSeek-V3's pre-tokenizer and decoder).
  std::string tokenizer_json() const;
  // tokenizer_config.json: BOS / EOS, add_bos_token, and `chat_template` verbatim when not empty.
  std::string tokenizer_config_json(const std::string& chat_template) const;
};

// Throws deepmoe::Error when the text is empty, not UTF-8 text (a NUL byte or an invalid sequence, with its
// byte offset), or the vocabulary is too small to hold the special and byte tokens.
TrainedBpe train_bpe(std::string_view text, const BpeTrainerOptions& options);

// Writes dir/tokenizer.json and dir/tokenizer_config.json (dir is created).
void write_bpe_tokenizer(const TrainedBpe& bpe, const std::string& chat_template, const std::string& dir);

}  // namespace deepmoe
