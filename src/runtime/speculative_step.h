// One request's speculative decoding step, cut at its model calls so that every decision is shared by the
// one-request loop (speculative_generator.h) and the batch scheduler (batch_scheduler.h), which batches the same
// calls across requests: which drafts to propose and how they are drawn (under the request's grammar too), the
// acceptance / rejection sampling of verification, the emission of the kept tokens through Generator::emit, and
// the truncation of the rejected positions. The request's random stream is consumed in the same order either way,
// so a seed gives the same tokens alone and batched.
//
//   SpeculativeStep step(generator, state, K, context_length);
//   while (step.wants_draft()) step.add_draft(step.continues_draft() ? lm.draft_more(seq, step.draft_input())
//                                                                     : lm.draft(seq, step.draft_input()));
//   text = step.verify(lm.forward_rows(seq, step.verify_tokens(), step.verify_tokens().size()), start);
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "runtime/generator.h"
#include "sampling/token_distribution.h"

namespace deepmoe {

class SpeculativeStep {
 public:
  // A step of a request that has its first token (chosen, not fed: exactly one pending token), proposing at most
  // `draft_tokens` drafts — fewer near max_tokens or the end of the context, where drafts could never be emitted.
  SpeculativeStep(Generator& generator, RequestState& state, int draft_tokens);

  // Drafting: while wants_draft(), run the draft model on draft_input() — draft() for the first, draft_more()
  // when continues_draft() — and pass its logits to add_draft().
  bool wants_draft() const;
  bool continues_draft() const { return !drafts_.empty(); }
  int32_t draft_input() const;
  void add_draft(std::span<const float> logits);

  // The tokens the verification forward feeds: the pending token, then the drafts (ends drafting).
  const std::vector<int32_t>& verify_tokens();
  // Given the logits after each of verify_tokens() ([size, vocab] row-major): accepts drafts, emits the kept
  // tokens (the first that ends the request ends the step), truncates the sequence to what the plain loop would
  // have fed by now, and returns the text that is now final. `start` is when the step began.
  std::string verify(std::span<const float> logits, std::chrono::steady_clock::time_point start);

  size_t drafts() const { return drafts_.size(); }

 private:
  void push_mask();
  std::span<const uint64_t> allowed_at(size_t j) const;

  Generator& generator_;
  RequestState& state_;
  size_t max_drafts_ = 0;
  bool drafting_ = true;
  std::vector<int32_t> drafts_;
  std::vector<TokenDistribution> q_;
  // Under a grammar: masks_[j] is what it allows after the drafts before j (masks_[k] for the bonus token).
  std::vector<std::vector<uint64_t>> masks_;
  std::vector<int32_t> fed_;
};

// The request's first token from the logits after its prompt, sampled as the plain loop samples it (no
// fast-forward of grammar-forced tokens: a speculative step starts from exactly one pending token). Returns the
// text that is now final. `start` is when the prefill began.
std::string speculative_first_token(Generator& generator, RequestState& state, std::span<const float> logits,
                                    std::chrono::steady_clock::time_point start);

}  // namespace deepmoe
