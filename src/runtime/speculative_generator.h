// Speculative decoding on top of the generation loop: after the prompt, each step has the draft model propose K
// tokens (the MTP module, recurrently for K > 1), runs the target on the last token plus the K drafts in one
// forward (K + 1 positions, logits at each), keeps the drafts that verification accepts plus one more token,
// and truncates the rejected positions from the caches. The output is the plain loop's, exactly: token for token
// at temperature 0 (verification accepts a draft only if it is the target's argmax), in distribution when
// sampling (rejection sampling, sampling/speculative.h, with both distributions from the request's own sampler
// chain). Tokens go through Generator::emit one by one, so EOS, stop strings and max_tokens inside an accepted
// run end the request exactly where the plain loop would, and the cache then holds what the plain loop's would.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "runtime/generator.h"
#include "runtime/speculative_lm.h"

namespace deepmoe {

class SpeculativeGenerator {
 public:
  // draft_tokens: K >= 1 drafts per step.
  SpeculativeGenerator(SpeculativeLm& lm, const Tokenizer& tokenizer, int draft_tokens);

  int draft_tokens() const { return draft_tokens_; }

  // As Generator::start.
  std::unique_ptr<RequestState> start(GenerationRequest request, LmSequence& sequence);

  // On the first call the prompt prefill and the first token (sampled as the plain loop does); then one
  // draft + verify step, which emits 1 to K + 1 tokens. Returns the text that is now final.
  std::string step(RequestState& state);

  std::unique_ptr<RequestState> generate(GenerationRequest request, LmSequence& sequence,
                                         const std::function<void(std::string_view)>& on_text);

 private:
  SpeculativeLm& lm_;
  Generator base_;
  int draft_tokens_;
};

}  // namespace deepmoe
