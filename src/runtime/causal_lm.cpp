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

void CausalLm::record_fed_tokens(LmSequence& sequence, std::span<const int32_t> tokens) {
  sequence.tokens_.insert(sequence.tokens_.end(), tokens.begin(), tokens.end());
}

}  // namespace deepmoe
