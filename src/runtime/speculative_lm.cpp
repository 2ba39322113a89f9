#include "runtime/speculative_lm.h"

#include "core/error.h"

namespace deepmoe {

std::vector<float> SpeculativeLm::forward_rows(LmSequence& sequence, std::span<const int32_t> tokens, size_t rows) {
  DEEPMOE_CHECK(rows >= 1 && rows <= tokens.size());
  DEEPMOE_CHECK(sequence.length() + static_cast<int64_t>(tokens.size()) <= context_length(),
                "forward past the context length");
  std::vector<float> logits = forward_rows_tokens(sequence, tokens, rows);
  DEEPMOE_CHECK(logits.size() == rows * static_cast<size_t>(vocab_size()));
  record_fed_tokens(sequence, tokens);
  return logits;
}

}  // namespace deepmoe
