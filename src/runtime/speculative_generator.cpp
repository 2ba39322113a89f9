#include "runtime/speculative_generator.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"
#include "runtime/speculative_step.h"

namespace deepmoe {

SpeculativeGenerator::SpeculativeGenerator(SpeculativeLm& lm, const Tokenizer& tokenizer, int draft_tokens)
    : lm_(lm), base_(lm, tokenizer), draft_tokens_(draft_tokens) {
  if (draft_tokens < 1)
    throw Error("draft tokens must be at least 1, got " + std::to_string(draft_tokens), ErrorContext{.field = "draft_tokens"});
}

std::unique_ptr<RequestState> SpeculativeGenerator::start(GenerationRequest request, LmSequence& sequence) {
  return base_.start(std::move(request), sequence);
}

std::string SpeculativeGenerator::step(RequestState& state) {
  DEEPMOE_CHECK(!state.done(), "step() on a finished request");
  const auto start = std::chrono::steady_clock::now();
  LmSequence& seq = *state.sequence;
  if (state.tokens.empty()) {
    const size_t common = Generator::reuse_prompt_prefix(state);
    const std::vector<float> logits =
        lm_.forward_rows(seq, std::span<const int32_t>(state.request.prompt).subspan(common), 1);
    std::string out = speculative_first_token(base_, state, logits, start);
    // The draft model's pass over the prompt belongs to the prefill, as the main model's does (it used to run
    // inside the first decode step's draft).
    if (!state.done()) {
      const auto draft_start = std::chrono::steady_clock::now();
      lm_.prefill_draft(seq);
      state.stats.prefill_seconds +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - draft_start).count();
    }
    return out;
  }
  SpeculativeStep step(base_, state, draft_tokens_);
  while (step.wants_draft()) {
    const int32_t input = step.draft_input();
    step.add_draft(step.continues_draft() ? lm_.draft_more(seq, input) : lm_.draft(seq, input));
  }
  const std::vector<int32_t>& fed = step.verify_tokens();
  return step.verify(lm_.forward_rows(seq, fed, fed.size()), start);
}

std::unique_ptr<RequestState> SpeculativeGenerator::generate(GenerationRequest request, LmSequence& sequence,
                                                             const std::function<void(std::string_view)>& on_text) {
  auto state = start(std::move(request), sequence);
  while (!state->done()) {
    const std::string piece = step(*state);
    if (!piece.empty() && on_text) on_text(piece);
  }
  return state;
}

}  // namespace deepmoe
