#include "runtime/speculative_lm.h"

#include <algorithm>

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

std::vector<std::vector<float>> SpeculativeLm::forward_rows_batch(std::span<const LmRowsEntry> entries) {
  for (const LmRowsEntry& e : entries) {
    DEEPMOE_CHECK(e.sequence && !e.tokens.empty() && e.rows <= e.tokens.size());
    DEEPMOE_CHECK(e.sequence->length() + static_cast<int64_t>(e.tokens.size()) <= context_length(),
                  "forward past the context length");
  }
  std::vector<std::vector<float>> logits = forward_rows_tokens_batch(entries);
  DEEPMOE_CHECK(logits.size() == entries.size(), "one logits block per entry");
  for (size_t i = 0; i < entries.size(); ++i)
    DEEPMOE_CHECK(logits[i].size() == entries[i].rows * static_cast<size_t>(vocab_size()));
  for (const LmRowsEntry& e : entries) record_fed_tokens(*e.sequence, e.tokens);
  return logits;
}

std::vector<std::vector<float>> SpeculativeLm::forward_rows_tokens_batch(std::span<const LmRowsEntry> entries) {
  std::vector<std::vector<float>> out;
  for (const LmRowsEntry& e : entries) {
    std::vector<float> logits = forward_rows_tokens(*e.sequence, e.tokens, std::max<size_t>(e.rows, 1));
    if (e.rows == 0) logits.clear();
    out.push_back(std::move(logits));
  }
  return out;
}

std::vector<std::vector<float>> SpeculativeLm::draft_batch(std::span<const LmDraftEntry> entries) {
  std::vector<std::vector<float>> out;
  for (const LmDraftEntry& e : entries)
    out.push_back(e.more ? draft_more(*e.sequence, e.token) : draft(*e.sequence, e.token));
  return out;
}

}  // namespace deepmoe
