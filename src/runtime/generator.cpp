#include "runtime/generator.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"
#include "runtime/token_healing.h"

namespace deepmoe {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The generated tokens not fed to the sequence yet.
std::vector<int32_t> pending_ids(const RequestState& state) {
  std::vector<int32_t> ids;
  for (size_t i = state.fed_tokens; i < state.tokens.size(); ++i) ids.push_back(state.tokens[i].token);
  return ids;
}

}  // namespace

double GenerationStats::prefill_tokens_per_second() const {
  const int64_t computed = prompt_tokens - cached_prompt_tokens;
  return prefill_seconds > 0.0 ? static_cast<double>(computed) / prefill_seconds : 0.0;
}

double GenerationStats::decode_tokens_per_second() const {
  const int64_t decoded = generated_tokens - 1;
  return decode_seconds > 0.0 && decoded > 0 ? static_cast<double>(decoded) / decode_seconds : 0.0;
}

double GenerationStats::draft_acceptance_rate() const {
  return draft_tokens > 0 ? static_cast<double>(accepted_draft_tokens) / static_cast<double>(draft_tokens) : 0.0;
}

double GenerationStats::tokens_per_verify_step() const {
  return verify_steps > 0 ? static_cast<double>(accepted_draft_tokens + verify_steps) / static_cast<double>(verify_steps)
                          : 0.0;
}

RequestState::RequestState(GenerationRequest req, LmSequence& seq, const Tokenizer& tokenizer)
    : request(std::move(req)),
      sequence(&seq),
      sampler(request.sampling),
      detokenizer(tokenizer),
      stop_matcher(request.stop) {
  sampler.set_prompt(request.prompt);
  stats.prompt_tokens = static_cast<int64_t>(request.prompt.size());
}

Generator::Generator(CausalLm& lm, const Tokenizer& tokenizer) : lm_(lm), tokenizer_(tokenizer) {
  eos_ids_ = lm.eos_token_ids();
  if (tokenizer.eos_id() >= 0) eos_ids_.push_back(tokenizer.eos_id());
  std::sort(eos_ids_.begin(), eos_ids_.end());
  eos_ids_.erase(std::unique(eos_ids_.begin(), eos_ids_.end()), eos_ids_.end());
}

std::unique_ptr<RequestState> Generator::start(GenerationRequest request, LmSequence& sequence) {
  if (auto error = validate_request(request, lm_.vocab_size(), lm_.context_length())) throw *error;
  HealedPrompt healed;
  if (request.token_healing) {
    healed = heal_prompt(request.prompt, *grammar_vocabulary());
    request.prompt = healed.tokens;
  }
  auto state = std::make_unique<RequestState>(std::move(request), sequence, tokenizer_);
  const grammar::Grammar* user_grammar = state->request.grammar.get();
  if (!healed.removed.empty()) {
    // The output starts with the backed-off bytes, then follows the request's grammar (or anything). EOS only
    // where the request could have ended anyway.
    const bool allow_eos = user_grammar || !state->request.ignore_eos;
    state->constraint = std::make_unique<GrammarConstraint>(prefixed_grammar(healed.removed, user_grammar),
                                                            grammar_vocabulary(), eos_ids_, allow_eos);
    state->healed_bytes_left = healed.removed.size();
  } else if (user_grammar) {
    state->constraint = std::make_unique<GrammarConstraint>(*user_grammar, grammar_vocabulary(), eos_ids_);
  }
  return state;
}

const std::shared_ptr<const grammar::TokenTrie>& Generator::grammar_vocabulary() {
  if (!grammar_vocabulary_) {
    const int32_t eos = tokenizer_.eos_id() >= 0 ? tokenizer_.eos_id() : eos_ids_.empty() ? -1 : eos_ids_.front();
    grammar_vocabulary_ = deepmoe::grammar_vocabulary(tokenizer_, lm_.vocab_size(), eos);
  }
  return grammar_vocabulary_;
}

bool Generator::ends_generation(const RequestState& state, int32_t token) const {
  // Under a grammar EOS always ends the output (it is allowed only where the grammar is complete).
  if (state.request.grammar && state.constraint && state.constraint->is_eos(token)) return true;
  const auto& extra = state.request.stop_token_ids;
  if (std::find(extra.begin(), extra.end(), token) != extra.end()) return true;
  return !state.request.ignore_eos && std::binary_search(eos_ids_.begin(), eos_ids_.end(), token);
}

// Releases what the detokenizer and the stop matcher still hold: the generation ended for another reason, so
// a partial stop string is just text. The detokenizer's tail may itself complete a stop string.
std::string Generator::visible(RequestState& state, std::string text) {
  const size_t n = std::min(state.healed_bytes_left, text.size());
  text.erase(0, n);
  state.healed_bytes_left -= n;
  return text;
}

std::string Generator::finish_with(RequestState& state, FinishReason reason) {
  std::string out = state.stop_matcher.push(visible(state, state.detokenizer.flush()));
  if (state.stop_matcher.stopped()) {
    state.finish = FinishReason::StopString;
    return out;
  }
  out += state.stop_matcher.flush();
  state.finish = reason;
  return out;
}

size_t Generator::reuse_prompt_prefix(RequestState& state) {
  // Reuse the longest cached prefix of the prompt, but always compute at least its last token: its logits give
  // the first new token.
  LmSequence& seq = *state.sequence;
  const std::vector<int32_t>& prompt = state.request.prompt;
  const auto& cached = seq.tokens();
  const size_t limit = std::min(cached.size(), prompt.size() - 1);
  size_t common = 0;
  while (common < limit && cached[common] == prompt[common]) ++common;
  seq.truncate(static_cast<int64_t>(common));
  state.stats.cached_prompt_tokens = static_cast<int64_t>(common);
  return common;
}

std::string Generator::step(RequestState& state) {
  DEEPMOE_CHECK(!state.done(), "step() on a finished request");
  const auto start = std::chrono::steady_clock::now();
  LmSequence& seq = *state.sequence;
  std::vector<float> logits;
  if (state.tokens.empty()) {
    const size_t common = reuse_prompt_prefix(state);
    logits = lm_.forward(seq, std::span<const int32_t>(state.request.prompt).subspan(common));
  } else {
    // The newest token, plus any tokens a grammar forced after it, in one forward.
    logits = lm_.forward(seq, unfed_tokens(state));
  }
  return after_forward(state, logits, start);
}

std::vector<int32_t> Generator::unfed_tokens(const RequestState& state) { return pending_ids(state); }

std::string Generator::after_forward(RequestState& state, std::span<const float> logits,
                                     std::chrono::steady_clock::time_point start) {
  DEEPMOE_CHECK(!state.done(), "after_forward() on a finished request");
  const bool first = state.tokens.empty();
  state.fed_tokens = state.tokens.size();
  std::span<const uint64_t> allowed;
  if (state.constraint) allowed = state.constraint->mask();
  const SampledToken sampled = state.sampler.sample(logits, allowed);
  if (auto closing = closing_instead_of(state, sampled.token)) {
    std::string out = close_output(state, *closing);
    (first ? state.stats.prefill_seconds : state.stats.decode_seconds) += seconds_since(start);
    return out;
  }
  std::string out = emit(state, sampled);
  if (!state.done() && state.constraint && state.request.fast_forward && !state.request.sampling.logprobs) {
    for (const int32_t token : state.constraint->forced_tokens(tokenizer_)) {
      state.sampler.accept(token);
      ++state.stats.forced_tokens;
      out += emit(state, SampledToken{.token = token, .forced = true});
      if (state.done()) break;
    }
  }
  (first ? state.stats.prefill_seconds : state.stats.decode_seconds) += seconds_since(start);
  return out;
}

std::optional<std::vector<int32_t>> Generator::closing_instead_of(RequestState& state, int32_t next) {
  // Checked only over the last tokens of the budget (a breadth-first search per step there).
  constexpr int64_t kWindow = 256;
  GrammarConstraint* grammar = state.constraint.get();
  const int64_t room = state.request.max_tokens - state.stats.generated_tokens;  // `next` included
  if (!grammar || !state.request.close_before_limit || room > kWindow || grammar->is_eos(next)) return std::nullopt;
  // The text is valid once the completion is out (EOS then ends it if there is room; else max_tokens does).
  std::optional<std::vector<int32_t>> after;
  if (grammar->accept(next)) {
    after = grammar->completion_tokens(tokenizer_);
    grammar->rollback(1);
    // One token of slack: fast-forward may spell the forced part of the completion with one token more.
    if (after && (after->empty() || int64_t(after->size()) + 1 <= room - 1)) return std::nullopt;
  }
  auto now = grammar->completion_tokens(tokenizer_);
  if (!now || int64_t(now->size()) > room) return std::nullopt;  // too late: the output will be cut
  // No completion found after `next` (the search is bounded): close only when the budget is nearly spent.
  if (!after && room > int64_t(now->size()) + 8) return std::nullopt;
  return now;
}

std::string Generator::close_output(RequestState& state, const std::vector<int32_t>& completion) {
  std::string out;
  for (const int32_t token : completion) {
    state.sampler.accept(token);
    ++state.stats.forced_tokens;
    ++state.stats.closing_tokens;
    out += emit(state, SampledToken{.token = token, .forced = true});
    if (state.done()) break;
  }
  const int32_t eos = grammar_vocabulary()->eos_id();
  if (!state.done() && eos >= 0 && state.request.grammar) {  // (token healing alone: the text just goes on)
    state.sampler.accept(eos);
    ++state.stats.forced_tokens;
    out += emit(state, SampledToken{.token = eos, .forced = true});
  }
  if (!state.done()) out += finish_with(state, FinishReason::MaxTokens);
  if (state.finish == FinishReason::Eos) state.finish = FinishReason::MaxTokens;  // the budget ended it
  return out;
}

std::string Generator::emit(RequestState& state, const SampledToken& sampled) {
  DEEPMOE_CHECK(!state.done(), "emit() on a finished request");
  if (state.constraint && !state.constraint->accept(sampled.token))
    throw Error("grammar: generated token " + std::to_string(sampled.token) + " is not allowed by the request's grammar");
  state.tokens.push_back(sampled);
  state.stats.generated_tokens = static_cast<int64_t>(state.tokens.size());

  std::string out;
  if (ends_generation(state, sampled.token)) {
    out = finish_with(state, FinishReason::Eos);
  } else {
    out = state.stop_matcher.push(visible(state, state.detokenizer.push(sampled.token)));
    if (state.stop_matcher.stopped()) {
      state.finish = FinishReason::StopString;
    } else if (state.stats.generated_tokens >= state.request.max_tokens) {
      out += finish_with(state, FinishReason::MaxTokens);
    } else if (state.stats.prompt_tokens + state.stats.generated_tokens > lm_.context_length()) {
      // The next forward feeds this token at position prompt + generated - 1, the last one there is. Unreachable
      // for a validated request (prompt + max_tokens fits); kept so a loop can never run past the context
      // whatever the caller did.
      out += finish_with(state, FinishReason::ContextFull);
    } else if (state.constraint && state.constraint->complete()) {
      // Nothing but EOS can follow: end here, with the EOS the model would have had to choose.
      const int32_t eos = grammar_vocabulary()->eos_id();
      if (eos >= 0) {
        state.constraint->accept(eos);
        state.sampler.accept(eos);
        state.tokens.push_back(SampledToken{.token = eos, .forced = true});
        state.stats.generated_tokens = static_cast<int64_t>(state.tokens.size());
        ++state.stats.forced_tokens;
      }
      out += finish_with(state, FinishReason::Eos);
    }
  }
  state.text += out;
  return out;
}

std::unique_ptr<RequestState> Generator::generate(GenerationRequest request, LmSequence& sequence,
                                                  const std::function<void(std::string_view)>& on_text) {
  auto state = start(std::move(request), sequence);
  while (!state->done()) {
    const std::string piece = step(*state);
    if (!piece.empty() && on_text) on_text(piece);
  }
  return state;
}

}  // namespace deepmoe
