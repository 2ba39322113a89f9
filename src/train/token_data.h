// Training data: one text file tokenized with the model's tokenizer (a BOS first), split into a training part and
// a held-out tail for validation; training draws random windows of T + 1 tokens, validation reads the tail in
// consecutive windows.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "train/train_model.h"

namespace deepmoe {

class Tokenizer;

// A small counter-based generator (splitmix64) whose whole state is one integer, saved in trainer checkpoints so
// a resumed run draws the same windows.
struct TrainRng {
  uint64_t state = 0;
  uint64_t next();
  uint64_t below(uint64_t n);  // uniform in [0, n)
};

class TokenDataset {
 public:
  // Errors (deepmoe::Error naming `path`): empty text, a NUL byte or invalid UTF-8 (binary data), or too few
  // tokens for one window of `window + 1` tokens in both the training part and the validation tail.
  static TokenDataset from_text(std::string_view text, const Tokenizer& tokenizer, double val_fraction,
                                int64_t window, const std::string& path);
  // From ids directly (tests).
  static TokenDataset from_tokens(std::vector<int32_t> tokens, double val_fraction, int64_t window,
                                  const std::string& path);

  TrainBatch sample(int64_t B, int64_t T, TrainRng& rng) const;
  // Consecutive windows of the validation tail, at most max_windows, grouped B per batch.
  std::vector<TrainBatch> validation(int64_t B, int64_t T, int64_t max_windows) const;

  int64_t train_tokens() const { return split_; }
  int64_t val_tokens() const { return int64_t(tokens_.size()) - split_; }
  // FNV-1a over the ids: a resumed run checks it is reading the same data.
  uint64_t fingerprint() const;
  // Unigram entropy of the training part in nats per token: the loss a model that ignores context reaches.
  double unigram_entropy() const;

 private:
  std::vector<int32_t> tokens_;
  int64_t split_ = 0;
};

}  // namespace deepmoe
