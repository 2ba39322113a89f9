// A Hugging Face tokenizer.json tokenizer (byte-level BPE, as DeepSeek-V3, GPT-2 and Llama-3 use): added tokens
// → pre-tokenizer → BPE on encode; token bytes → UTF-8 on decode. Results are identical to HF tokenizers
// (tests/tokenizer: the golden DeepSeek-V3 file). Components tokenizer.json may name but deepmoe does not
// implement are rejected at load by name, never skipped.
//
// Invalid UTF-8 input: HF tokenizers only accepts valid strings (a Python str / Rust &str), so text arriving as
// bytes must be decoded first; deepmoe does what bytes.decode("utf-8", errors="replace") would do: each maximal
// ill-formed subsequence becomes U+FFFD, then the text is encoded as HF encodes that string.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace deepmoe {

class ThreadPool;

class Tokenizer {
 public:
  // Loads dir/tokenizer.json and, when present, dir/tokenizer_config.json (BOS/EOS tokens, add_bos_token,
  // add_eos_token). Throws deepmoe::Error naming the file and field on anything missing, malformed or
  // unsupported.
  static std::unique_ptr<Tokenizer> load(const std::string& dir);
  // The same from JSON text (config may be empty); `origin` names the source in errors.
  static std::unique_ptr<Tokenizer> from_json(std::string_view tokenizer_json, std::string_view config_json = {},
                                              const std::string& origin = "tokenizer.json");
  ~Tokenizer();

  // add_special: prepend BOS / append EOS as tokenizer_config.json says (add_bos_token / add_eos_token).
  // parse_special: match special added tokens in the text; when false they are encoded as plain text.
  std::vector<int32_t> encode(std::string_view text, bool add_special = true, bool parse_special = true) const;

  // encode() of each text, spread over pool's threads (calling thread only when pool is null).
  std::vector<std::vector<int32_t>> encode_batch(std::span<const std::string> texts, bool add_special,
                                                 bool parse_special, ThreadPool* pool) const;

  // UTF-8 text of ids: the concatenated token bytes, each maximal invalid subsequence replaced by U+FFFD (HF
  // ByteLevel decoder + from_utf8_lossy). Ids with no token (negative, padding past the vocabulary) decode to
  // nothing, as in HF. skip_special drops special tokens.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

  // The raw bytes token id stands for (empty when id has no token). May be a partial UTF-8 sequence.
  const std::string& token_bytes(int32_t id) const;
  // The token's string as tokenizer.json spells it (byte-level alphabet for vocab tokens; content for added
  // tokens), like HF id_to_token; empty when id has no token.
  const std::string& token_piece(int32_t id) const;
  // Id of a token string as tokenizer.json spells it (vocab or added token), or -1.
  int32_t token_to_id(std::string_view piece) const;

  // One past the largest token id (the model's embedding table may be larger: padded ids have no token).
  int32_t vocab_size() const;
  int32_t bos_id() const;  // -1 when there is none
  int32_t eos_id() const;  // -1 when there is none
  bool add_bos() const;
  bool add_eos() const;
  bool is_special(int32_t id) const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Turns a stream of ids into UTF-8 text as they arrive (streaming generation): output chunks are always valid
// UTF-8; bytes of a character split across tokens are held back until it is complete; bytes that can no longer
// form a character become U+FFFD at once. The concatenation of all push() results and flush() equals
// decode(all ids).
class StreamingDetokenizer {
 public:
  explicit StreamingDetokenizer(const Tokenizer& tokenizer, bool skip_special = false);
  std::string push(int32_t id);
  // Emits what is held back (an incomplete sequence at the end becomes U+FFFD) and resets.
  std::string flush();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::string pending_;  // at most 3 bytes: a proper prefix of a UTF-8 sequence
};

}  // namespace deepmoe
