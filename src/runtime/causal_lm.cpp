#include "runtime/causal_lm.h"

#include "core/error.h"

namespace deepmoe {

void LmSequence::truncate(int64_t n) {
  DEEPMOE_CHECK(n >= 0 && n <= length());
  if (n == length()) return;
  truncate_cache(n);
  tokens_.resize(static_cast<size_t>(n));
}

std::vector<float> CausalLm::forward(LmSequence& sequence, std::span<const int32_t> tokens) {
  DEEPMOE_CHECK(!tokens.empty());
  DEEPMOE_CHECK(sequence.length() + static_cast<int64_t>(tokens.size()) <= context_length(),
                "forward past the context length");
  std::vector<float> logits = forward_tokens(sequence, tokens);
  DEEPMOE_CHECK(static_cast<int64_t>(logits.size()) == vocab_size());
  record_fed_tokens(sequence, tokens);
  return logits;
}

std::unique_ptr<LmSequence> CausalLm::new_sequence(std::span<const int32_t>, int64_t) { return new_sequence(); }

std::vector<std::vector<float>> CausalLm::forward_batch(std::span<const LmBatchEntry> entries) {
  for (const LmBatchEntry& e : entries) {
    DEEPMOE_CHECK(e.sequence && !e.tokens.empty());
    DEEPMOE_CHECK(e.sequence->length() + static_cast<int64_t>(e.tokens.size()) <= context_length(),
                  "forward past the context length");
  }
  std::vector<std::vector<float>> logits = forward_tokens_batch(entries);
  size_t wanted = 0;
  for (const LmBatchEntry& e : entries) wanted += e.logits ? 1 : 0;
  DEEPMOE_CHECK(logits.size() == wanted, "one logits row per entry that asks");
  for (const auto& row : logits) DEEPMOE_CHECK(static_cast<int64_t>(row.size()) == vocab_size());
  for (const LmBatchEntry& e : entries) record_fed_tokens(*e.sequence, e.tokens);
  return logits;
}

std::vector<std::vector<float>> CausalLm::forward_tokens_batch(std::span<const LmBatchEntry> entries) {
  std::vector<std::vector<float>> out;
  for (const LmBatchEntry& e : entries) {
    std::vector<float> logits = forward_tokens(*e.sequence, e.tokens);
    if (e.logits) out.push_back(std::move(logits));
  }
  return out;
}

void CausalLm::record_fed_tokens(LmSequence& sequence, std::span<const int32_t> tokens) {
  sequence.tokens_.insert(sequence.tokens_.end(), tokens.begin(), tokens.end());
}

}  // namespace deepmoe
