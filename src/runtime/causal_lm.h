// What the generation loop needs of a model: per-sequence cache state, and the next-token logits after feeding
// tokens. The DeepSeek forward pass is one implementation (deepseek_lm.h); tests drive the loop with small
// deterministic ones, so the loop is tested without loading a checkpoint.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace deepmoe {

// One sequence's cache in a model, and the tokens it holds (prompt + fed generated tokens), so a later request
// that shares a prefix (the next chat turn) reuses it instead of recomputing it.
class LmSequence {
 public:
  virtual ~LmSequence() = default;

  const std::vector<int32_t>& tokens() const { return tokens_; }
  int64_t length() const { return static_cast<int64_t>(tokens_.size()); }

  // Forgets every position from n on (n <= length()).
  void truncate(int64_t n);

 protected:
  virtual void truncate_cache(int64_t n) = 0;

 private:
  friend class CausalLm;
  std::vector<int32_t> tokens_;
};

// One sequence's part of a batched forward: its new tokens (at least one), and whether the logits after the last
// of them are wanted (a prompt chunk that is not the prompt's last needs none).
struct LmBatchEntry {
  LmSequence* sequence = nullptr;
  std::span<const int32_t> tokens;
  bool logits = true;
};

// How many tokens the model's KV cache can hold over all sequences (0: no bound, it grows as needed), in blocks
// of block_tokens, and at most in one sequence (the memory of one rank when the caches are spread over ranks).
struct KvCapacity {
  int64_t tokens = 0;
  int64_t block_tokens = 1;
  int64_t per_sequence = 0;  // 0: as tokens
};

class CausalLm {
 public:
  virtual ~CausalLm() = default;

  virtual int64_t vocab_size() const = 0;
  // Positions a sequence may hold (max_position_embeddings).
  virtual int64_t context_length() const = 0;
  // Tokens that end a generation (config.json eos_token_id, all of them when it is a list).
  virtual std::vector<int32_t> eos_token_ids() const = 0;
  virtual std::unique_ptr<LmSequence> new_sequence() = 0;
  // A new sequence for a request with this prompt: where the model keeps a prefix cache, it already holds the
  // longest cached prefix of the prompt (LmSequence::tokens() says which; never the whole prompt). A model with a
  // bounded cache keeps room for `reserve_tokens` tokens of it (the prompt and what may be generated; 0 = no
  // bound is kept) and returns null when it has no room now. By default a plain new_sequence().
  virtual std::unique_ptr<LmSequence> new_sequence(std::span<const int32_t> prompt, int64_t reserve_tokens);
  virtual KvCapacity kv_capacity() const { return {}; }
  // Whether new_sequence(prompt, reserve_tokens) would find room now.
  virtual bool has_room(int64_t reserve_tokens) const {
    (void)reserve_tokens;
    return true;
  }

  // Appends `tokens` (at least one) to `sequence` and returns the logits [vocab_size] after the last of them.
  std::vector<float> forward(LmSequence& sequence, std::span<const int32_t> tokens);
  // Appends every entry's tokens to its sequence (distinct sequences) and returns the logits of the entries that
  // ask for them, in entry order. A sequence's logits do not depend on what else is in the batch.
  std::vector<std::vector<float>> forward_batch(std::span<const LmBatchEntry> entries);

 protected:
  virtual std::vector<float> forward_tokens(LmSequence& sequence, std::span<const int32_t> tokens) = 0;
  // One call per entry unless a model overrides it with a single batched step.
  virtual std::vector<std::vector<float>> forward_tokens_batch(std::span<const LmBatchEntry> entries);
  // Records `tokens` as fed to `sequence` (for subclasses with forward calls of their own).
  static void record_fed_tokens(LmSequence& sequence, std::span<const int32_t> tokens);
};

}  // namespace deepmoe
