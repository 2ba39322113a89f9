// What speculative decoding needs of a model beyond CausalLm: logits after each of several fed tokens (one
// verification forward scores every draft), and a draft model that proposes the next tokens from the target's
// own state. The MTP adapter (mtp_lm.h) is the implementation; tests drive the loop with scripted ones too.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "runtime/causal_lm.h"

namespace deepmoe {

class SpeculativeLm : public CausalLm {
 public:
  // Appends `tokens` (at least `rows`) to `sequence` and returns the logits after each of the last `rows` of
  // them, [rows, vocab_size] row-major.
  std::vector<float> forward_rows(LmSequence& sequence, std::span<const int32_t> tokens, size_t rows);

  // Draft logits [vocab_size] for the token after `next`, the token chosen after everything `sequence` holds
  // and not fed yet.
  virtual std::vector<float> draft(LmSequence& sequence, int32_t next) = 0;
  // Continues the draft recurrently: logits for the token after `token`, the token just drawn from the
  // previous draft logits. Valid until the next forward or truncation of `sequence`.
  virtual std::vector<float> draft_more(LmSequence& sequence, int32_t token) = 0;

 protected:
  virtual std::vector<float> forward_rows_tokens(LmSequence& sequence, std::span<const int32_t> tokens,
                                                 size_t rows) = 0;
  std::vector<float> forward_tokens(LmSequence& sequence, std::span<const int32_t> tokens) override {
    return forward_rows_tokens(sequence, tokens, 1);
  }
};

}  // namespace deepmoe
