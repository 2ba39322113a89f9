#include "train/token_data.h"

#include <cmath>
#include <unordered_map>

#include "core/error.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace deepmoe {

uint64_t TrainRng::next() {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t TrainRng::below(uint64_t n) { return n == 0 ? 0 : next() % n; }

TokenDataset TokenDataset::from_text(std::string_view text, const Tokenizer& tokenizer, double val_fraction,
                                     int64_t window, const std::string& path) {
  if (text.empty()) throw Error("the training data is empty", {path, "", ""});
  for (size_t i = 0; i < text.size();) {
    uint32_t cp = 0;
    const size_t n = utf8::decode(text.substr(i), &cp);
    if (n == 0 || cp == 0)
      throw Error(std::string("the training data is not UTF-8 text (") + (n == 0 ? "invalid UTF-8" : "a NUL byte") +
                      " at byte offset " + std::to_string(i) + "); is it a binary file?",
                  {path, "", ""});
    i += n;
  }
  return from_tokens(tokenizer.encode(text, /*add_special=*/true, /*parse_special=*/false), val_fraction, window, path);
}

TokenDataset TokenDataset::from_tokens(std::vector<int32_t> tokens, double val_fraction, int64_t window,
                                       const std::string& path) {
  if (!(val_fraction > 0 && val_fraction < 1))
    throw Error("the validation fraction must be in (0, 1), got " + std::to_string(val_fraction), {"", "", "--val-fraction"});
  TokenDataset d;
  d.tokens_ = std::move(tokens);
  const int64_t n = int64_t(d.tokens_.size());
  d.split_ = n - int64_t(std::ceil(double(n) * val_fraction));
  const int64_t need = window + 1;
  if (d.split_ < need || n - d.split_ < need)
    throw Error("the training data is too short: " + std::to_string(n) + " tokens, but a window of " +
                    std::to_string(need) + " tokens must fit in both the training part (" + std::to_string(d.split_) +
                    ") and the validation tail (" + std::to_string(n - d.split_) + ")",
                {path, "", ""});
  return d;
}

TrainBatch TokenDataset::sample(int64_t B, int64_t T, TrainRng& rng) const {
  TrainBatch batch{B, T, {}};
  batch.tokens.reserve(size_t(B * (T + 1)));
  const uint64_t starts = uint64_t(split_ - (T + 1) + 1);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t s = int64_t(rng.below(starts));
    batch.tokens.insert(batch.tokens.end(), tokens_.begin() + s, tokens_.begin() + s + T + 1);
  }
  return batch;
}

std::vector<TrainBatch> TokenDataset::validation(int64_t B, int64_t T, int64_t max_windows) const {
  std::vector<TrainBatch> out;
  TrainBatch cur{0, T, {}};
  int64_t windows = 0;
  for (int64_t s = split_; s + T + 1 <= int64_t(tokens_.size()) && windows < max_windows; s += T, ++windows) {
    cur.tokens.insert(cur.tokens.end(), tokens_.begin() + s, tokens_.begin() + s + T + 1);
    if (++cur.B == B) {
      out.push_back(std::move(cur));
      cur = TrainBatch{0, T, {}};
    }
  }
  if (cur.B > 0) out.push_back(std::move(cur));
  return out;
}

uint64_t TokenDataset::fingerprint() const {
  uint64_t h = 0xCBF29CE484222325ull;
  for (int32_t t : tokens_)
    for (int i = 0; i < 4; ++i) h = (h ^ ((uint32_t(t) >> (8 * i)) & 0xFF)) * 0x100000001B3ull;
  return h;
}

double TokenDataset::unigram_entropy() const {
  std::unordered_map<int32_t, int64_t> count;
  for (int64_t i = 0; i < split_; ++i) ++count[tokens_[size_t(i)]];
  double h = 0;
  for (const auto& [t, c] : count) {
    const double p = double(c) / double(split_);
    h -= p * std::log(p);
  }
  return h;
}

}  // namespace deepmoe
