// The generation loop: prefill the prompt (reusing whatever prefix the sequence already caches), then decode one
// token per step — model forward → sampler chain → EOS check → streaming detokenizer → stop strings — handing
// out text as soon as it can no longer turn into a stop string. The state of one request lives in
// RequestState and advances by Generator::step, so a scheduler can later interleave many requests.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/causal_lm.h"
#include "runtime/generation_request.h"
#include "runtime/grammar_constraint.h"
#include "sampling/sampler.h"
#include "sampling/stop_string_matcher.h"
#include "tokenizer/tokenizer.h"

namespace deepmoe {

struct GenerationStats {
  int64_t prompt_tokens = 0;
  int64_t cached_prompt_tokens = 0;  // prompt prefix found in the sequence's cache, not recomputed
  int64_t generated_tokens = 0;      // sampled tokens, the ending EOS included
  double prefill_seconds = 0.0;      // the first step: prompt forward + first sample
  double decode_seconds = 0.0;       // every later step
  // Speculative decoding (speculative_generator.h): verification steps, draft tokens proposed and accepted.
  int64_t verify_steps = 0;
  int64_t draft_tokens = 0;
  int64_t accepted_draft_tokens = 0;
  // Constrained output: tokens the grammar forced and the loop took without sampling (fast-forward).
  int64_t forced_tokens = 0;
  // Of those, tokens that completed the output early because max_tokens was near (close_before_limit).
  int64_t closing_tokens = 0;

  // Prompt tokens actually computed per second of prefill.
  double prefill_tokens_per_second() const;
  // Tokens per second of the decode steps (the first token belongs to the prefill).
  double decode_tokens_per_second() const;
  // Accepted / proposed draft tokens, and tokens produced per verification step (accepted drafts + 1).
  double draft_acceptance_rate() const;
  double tokens_per_verify_step() const;
};

struct RequestState {
  RequestState(GenerationRequest request, LmSequence& sequence, const Tokenizer& tokenizer);

  GenerationRequest request;
  LmSequence* sequence;
  Sampler sampler;
  StreamingDetokenizer detokenizer;
  StopStringMatcher stop_matcher;
  std::vector<SampledToken> tokens;  // generated so far, the ending EOS included
  size_t fed_tokens = 0;             // of those, fed to the sequence (the plain loop)
  std::unique_ptr<GrammarConstraint> constraint;  // when the request has a grammar (or token healing)
  size_t healed_bytes_left = 0;                   // token healing: output bytes that repeat the backed-off prompt
  std::string text;                  // everything emitted so far
  FinishReason finish = FinishReason::None;
  GenerationStats stats;

  bool done() const { return finish != FinishReason::None; }
};

class Generator {
 public:
  // The tokenizer decodes generated ids; EOS ids come from the model config, plus the tokenizer's EOS.
  Generator(CausalLm& lm, const Tokenizer& tokenizer);

  CausalLm& lm() { return lm_; }
  const Tokenizer& tokenizer() const { return tokenizer_; }

  // Validates the request (throws deepmoe::Error naming the field) and makes its state on `sequence`; a
  // request with a grammar gets its matcher here.
  std::unique_ptr<RequestState> start(GenerationRequest request, LmSequence& sequence);

  // One step: on the first call the prompt prefill, then one decode token. Returns the text that is now final
  // (possibly empty); state.done() tells when the request has finished.
  std::string step(RequestState& state);

  // Runs `request` to the end, passing each text piece to on_text as it is decided.
  std::unique_ptr<RequestState> generate(GenerationRequest request, LmSequence& sequence,
                                         const std::function<void(std::string_view)>& on_text);

  // The two halves of step() for a loop that runs the forward itself (the batch scheduler): the tokens the
  // request must feed before its next sample (after the first step: the newest token and any forced after it;
  // before it, the prompt past reuse_prompt_prefix()), and — given the logits after feeding them — the sample, its
  // ending rules and any grammar-forced tokens, returning the text that is now final. `start` is when the step
  // began (for the prefill / decode timings).
  static std::vector<int32_t> unfed_tokens(const RequestState& state);
  std::string after_forward(RequestState& state, std::span<const float> logits,
                            std::chrono::steady_clock::time_point start);

  // Records `sampled` as the request's next generated token (the sampler must already have it) and applies the
  // ending rules — EOS / stop token, stop string, max_tokens, context — returning the text that is now final.
  // A loop that produces several tokens per forward (speculative decoding) hands them over one by one and
  // stops at the first that finishes the request.
  std::string emit(RequestState& state, const SampledToken& sampled);

  // The prefix of the request's prompt that `sequence` already caches and that the first step reuses (the last
  // prompt token is always computed: its logits give the first new token). Truncates the sequence to it.
  static size_t reuse_prompt_prefix(RequestState& state);

  // Under a grammar with close_before_limit: the completion to emit instead of `next` (the token about to be
  // emitted), when after `next` the output could no longer be completed within max_tokens (and now it still
  // can); nullopt otherwise.
  std::optional<std::vector<int32_t>> closing_instead_of(RequestState& state, int32_t next);
  // Emits `completion` and EOS, ending the request with finish MaxTokens; returns the text now final.
  std::string close_output(RequestState& state, const std::vector<int32_t>& completion);

  // Ids that end generation: the model's EOS ids plus the tokenizer's.
  const std::vector<int32_t>& eos_ids() const { return eos_ids_; }

 private:
  bool ends_generation(const RequestState& state, int32_t token) const;
  std::string finish_with(RequestState& state, FinishReason reason);
  // Detokenized text minus what repeats the prompt bytes token healing backed off.
  static std::string visible(RequestState& state, std::string text);
  // The vocabulary trie grammars are matched against (built on first use, then shared by every request).
  const std::shared_ptr<const grammar::TokenTrie>& grammar_vocabulary();

  CausalLm& lm_;
  const Tokenizer& tokenizer_;
  std::vector<int32_t> eos_ids_;
  std::shared_ptr<const grammar::TokenTrie> grammar_vocabulary_;
};

}  // namespace deepmoe
