#include "runtime/speculative_step.h"

#include <algorithm>

#include "core/error.h"
#include "sampling/speculative.h"

namespace deepmoe {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// A token drawn from a distribution: at temperature 0 the point mass itself, without touching the random source
// (so greedy decoding never depends on it).
int32_t draw_token(const TokenDistribution& d, Sampler& sampler) {
  if (d.ids.size() == 1) return d.ids.front();
  return sample_from(d, sampler.rng().uniform());
}

SampledToken with_logprobs(int32_t token, std::span<const float> logits, const SamplingParams& params) {
  SampledToken out;
  out.token = token;
  if (params.logprobs) {
    out.logprob = token_logprob(logits, token);
    out.top = top_logprobs(logits, params.top_logprobs);
  }
  return out;
}

}  // namespace

SpeculativeStep::SpeculativeStep(Generator& generator, RequestState& state, int draft_tokens)
    : generator_(generator), state_(state) {
  DEEPMOE_CHECK(!state.done(), "a speculative step on a finished request");
  DEEPMOE_CHECK(!state.tokens.empty() && state.fed_tokens + 1 == state.tokens.size(),
                "a speculative step needs exactly one chosen token not fed yet");
  // Drafts past max_tokens or the context could never be emitted: propose at most what is left after the token
  // this step always produces.
  const int64_t budget = std::min(state.request.max_tokens - state.stats.generated_tokens,
                                  generator.lm().context_length() - state.sequence->length()) - 1;
  max_drafts_ = static_cast<size_t>(std::clamp<int64_t>(budget, 0, draft_tokens));
}

std::span<const uint64_t> SpeculativeStep::allowed_at(size_t j) const {
  return state_.constraint ? std::span<const uint64_t>(masks_[j]) : std::span<const uint64_t>();
}

// Under a grammar every draft is drawn from the masked distribution and advances the matcher; the matcher then
// rolls back to before the drafts, and emit() advances it again by the tokens verification keeps — so a rejected
// draft never stays in the grammar state.
void SpeculativeStep::push_mask() {
  GrammarConstraint& grammar = *state_.constraint;
  if (grammar.matcher().is_terminated()) {
    masks_.emplace_back(masks_.front().size(), 0);  // after an EOS draft; never used (EOS ends the request)
  } else {
    const std::span<const uint64_t> m = grammar.mask();
    masks_.emplace_back(m.begin(), m.end());
  }
}

bool SpeculativeStep::wants_draft() const { return drafting_ && drafts_.size() < max_drafts_; }

int32_t SpeculativeStep::draft_input() const {
  return drafts_.empty() ? state_.tokens.back().token : drafts_.back();
}

void SpeculativeStep::add_draft(std::span<const float> logits) {
  DEEPMOE_CHECK(wants_draft(), "add_draft() after drafting ended");
  GrammarConstraint* grammar = state_.constraint.get();
  if (grammar) push_mask();
  q_.push_back(state_.sampler.distribution(logits, drafts_, allowed_at(drafts_.size())));
  drafts_.push_back(draw_token(q_.back(), state_.sampler));
  if (grammar) {
    DEEPMOE_CHECK(grammar->accept(drafts_.back()), "a draft outside the grammar's mask");
    if (grammar->is_eos(drafts_.back())) drafting_ = false;
  }
}

const std::vector<int32_t>& SpeculativeStep::verify_tokens() {
  if (drafting_ || fed_.empty()) {
    drafting_ = false;
    if (state_.constraint) {
      push_mask();
      state_.constraint->rollback(drafts_.size());
    }
    fed_ = {state_.tokens.back().token};
    fed_.insert(fed_.end(), drafts_.begin(), drafts_.end());
  }
  return fed_;
}

std::string SpeculativeStep::verify(std::span<const float> logits, std::chrono::steady_clock::time_point start) {
  verify_tokens();
  const size_t k = drafts_.size();
  const size_t vocab = static_cast<size_t>(generator_.lm().vocab_size());
  DEEPMOE_CHECK(logits.size() == (k + 1) * vocab, "one logits row per verified position");
  LmSequence& seq = *state_.sequence;
  const int64_t fed_before = seq.length() - static_cast<int64_t>(k + 1);
  DEEPMOE_CHECK(fed_before >= 0 && std::equal(fed_.begin(), fed_.end(), seq.tokens().end() - std::ptrdiff_t(k + 1)),
                "verify() before the verification forward");
  Sampler& sampler = state_.sampler;
  auto row = [&](size_t j) { return logits.subspan(j * vocab, vocab); };

  std::string out;
  size_t emitted = 0;
  for (size_t j = 0; j <= k && !state_.done(); ++j) {
    const TokenDistribution p = sampler.distribution(row(j), std::span<const int32_t>(drafts_).first(j), allowed_at(j));
    int32_t token;
    bool accepted = false;
    if (j < k) {
      const DraftVerdict v = verify_draft(p, q_[j], drafts_[j], sampler.rng());
      token = v.token;
      accepted = v.accepted;
      state_.stats.accepted_draft_tokens += accepted;
    } else {
      token = draw_token(p, sampler);  // every draft kept: the bonus token
    }
    sampler.accept(token);
    if (auto closing = generator_.closing_instead_of(state_, token)) {
      out += generator_.close_output(state_, *closing);  // the budget is nearly spent: complete the output now
      ++emitted;
      break;
    }
    out += generator_.emit(state_, with_logprobs(token, row(j), sampler.params()));
    ++emitted;
    if (!accepted) break;
  }
  // Keep what the plain loop would have fed by now: the pending token and the drafts emitted before the newest
  // token (the newest is fed by the next step).
  seq.truncate(fed_before + static_cast<int64_t>(emitted));
  state_.fed_tokens = state_.tokens.size() - 1;
  state_.stats.draft_tokens += static_cast<int64_t>(k);
  ++state_.stats.verify_steps;
  state_.stats.decode_seconds += seconds_since(start);
  return out;
}

std::string speculative_first_token(Generator& generator, RequestState& state, std::span<const float> logits,
                                    std::chrono::steady_clock::time_point start) {
  DEEPMOE_CHECK(state.tokens.empty(), "the first token of a request that has one");
  std::span<const uint64_t> allowed;
  if (state.constraint) allowed = state.constraint->mask();
  const SampledToken first = state.sampler.sample(logits, allowed);
  const auto closing = generator.closing_instead_of(state, first.token);
  const std::string out = closing ? generator.close_output(state, *closing) : generator.emit(state, first);
  state.fed_tokens = state.tokens.empty() ? 0 : state.tokens.size() - 1;
  state.stats.prefill_seconds += seconds_since(start);
  return out;
}

}  // namespace deepmoe
