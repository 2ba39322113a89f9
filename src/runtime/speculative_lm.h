// What speculative decoding needs of a model beyond CausalLm: logits after each of several fed tokens (one
// verification forward scores every draft), and a draft model that proposes the next tokens from the target's
// own state. The MTP adapter (speculative_mtp_lm.h) is the implementation; tests drive the loop with scripted
// ones too. Each call has a batched form over distinct sequences (the batch scheduler's step), which by default
// makes one call per sequence.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "runtime/causal_lm.h"

namespace deepmoe {

// One sequence's part of a batched forward_rows: its new tokens (at least one), and how many of the last of them
// want logits (0: a prompt chunk that is not the prompt's last).
struct LmRowsEntry {
  LmSequence* sequence = nullptr;
  std::span<const int32_t> tokens;
  size_t rows = 1;
};

// One sequence's part of a batched draft: draft(sequence, token) to start a step's drafts, or, with `more`,
// draft_more(sequence, token) to continue them.
struct LmDraftEntry {
  LmSequence* sequence = nullptr;
  int32_t token = 0;
  bool more = false;
};

class SpeculativeLm : public CausalLm {
 public:
  // Appends `tokens` (at least `rows`) to `sequence` and returns the logits after each of the last `rows` of
  // them, [rows, vocab_size] row-major.
  std::vector<float> forward_rows(LmSequence& sequence, std::span<const int32_t> tokens, size_t rows);
  // The same for several distinct sequences in one step: per entry its [rows, vocab_size] logits (empty when
  // rows is 0). A sequence's logits do not depend on what else is in the batch.
  std::vector<std::vector<float>> forward_rows_batch(std::span<const LmRowsEntry> entries);

  // Draft logits [vocab_size] for the token after `next`, the token chosen after everything `sequence` holds
  // and not fed yet.
  virtual std::vector<float> draft(LmSequence& sequence, int32_t next) = 0;
  // Runs the draft model ahead over the fed positions whose following token is fed too (after the prompt's
  // forward: all but its last), so that the first draft() of decoding has one position left to run. Part of the
  // prefill; optional, since draft() catches up on whatever was not run here.
  virtual void prefill_draft(LmSequence& /*sequence*/) {}
  // Continues the draft recurrently: logits for the token after `token`, the token just drawn from the
  // previous draft logits. Valid until the next forward or truncation of `sequence`.
  virtual std::vector<float> draft_more(LmSequence& sequence, int32_t token) = 0;
  // draft() or draft_more() for each entry (distinct sequences), in one step where the model can.
  virtual std::vector<std::vector<float>> draft_batch(std::span<const LmDraftEntry> entries);

 protected:
  virtual std::vector<float> forward_rows_tokens(LmSequence& sequence, std::span<const int32_t> tokens,
                                                 size_t rows) = 0;
  virtual std::vector<std::vector<float>> forward_rows_tokens_batch(std::span<const LmRowsEntry> entries);
  std::vector<float> forward_tokens(LmSequence& sequence, std::span<const int32_t> tokens) override {
    return forward_rows_tokens(sequence, tokens, 1);
  }
};

}  // namespace deepmoe
