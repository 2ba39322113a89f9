#include "runtime/speculative_generator.h"

#include <algorithm>
#include <chrono>

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
  Sampler& sampler = state.sampler;
  const int64_t vocab = lm_.vocab_size();

  if (state.tokens.empty()) {
    const size_t common = Generator::reuse_prompt_prefix(state);
    const std::vector<float> logits =
        lm_.forward_rows(seq, std::span<const int32_t>(state.request.prompt).subspan(common), 1);
    std::span<const uint64_t> allowed;
    if (state.constraint) allowed = state.constraint->mask();
    const SampledToken first = sampler.sample(logits, allowed);
    const auto closing = base_.closing_instead_of(state, first.token);
    const std::string out = closing ? base_.close_output(state, *closing) : base_.emit(state, first);
    state.stats.prefill_seconds += seconds_since(start);
    return out;
  }

  // Drafts past max_tokens or the context could never be emitted: propose at most what is left after the
  // token this step always produces.
  const int32_t last = state.tokens.back().token;  // chosen, not fed yet
  const int64_t budget = std::min(state.request.max_tokens - state.stats.generated_tokens,
                                  lm_.context_length() - seq.length()) - 1;
  const size_t max_drafts = static_cast<size_t>(std::clamp<int64_t>(budget, 0, draft_tokens_));

  // Under a grammar every draft is drawn from the masked distribution and advances the matcher; masks[j] is
  // what the grammar allows after the drafts before j (and masks[k] for the bonus token). The matcher then
  // rolls back to before the drafts, and emit() advances it again by the tokens verification keeps — so a
  // rejected draft never stays in the grammar state.
  GrammarConstraint* grammar = state.constraint.get();
  std::vector<std::vector<uint64_t>> masks;
  auto allowed_at = [&](size_t j) {
    return grammar ? std::span<const uint64_t>(masks[j]) : std::span<const uint64_t>();
  };
  auto push_mask = [&] {
    if (grammar->matcher().is_terminated()) {
      masks.emplace_back(masks.front().size(), 0);  // after an EOS draft; never used (EOS ends the request)
    } else {
      const std::span<const uint64_t> m = grammar->mask();
      masks.emplace_back(m.begin(), m.end());
    }
  };
  std::vector<int32_t> drafts;
  std::vector<TokenDistribution> q;
  for (size_t j = 0; j < max_drafts; ++j) {
    const std::vector<float> logits = j == 0 ? lm_.draft(seq, last) : lm_.draft_more(seq, drafts.back());
    if (grammar) push_mask();
    q.push_back(sampler.distribution(logits, drafts, allowed_at(j)));
    drafts.push_back(draw_token(q.back(), sampler));
    if (grammar) {
      DEEPMOE_CHECK(grammar->accept(drafts.back()), "a draft outside the grammar's mask");
      if (grammar->is_eos(drafts.back())) break;
    }
  }
  const size_t k = drafts.size();
  if (grammar) {
    push_mask();
    grammar->rollback(k);
  }

  // Verify: the last token and every draft in one forward, logits after each.
  const int64_t fed_before = seq.length();
  std::vector<int32_t> fed = {last};
  fed.insert(fed.end(), drafts.begin(), drafts.end());
  const std::vector<float> logits = lm_.forward_rows(seq, fed, k + 1);
  auto row = [&](size_t j) { return std::span<const float>(logits).subspan(j * size_t(vocab), size_t(vocab)); };

  std::string out;
  size_t emitted = 0;
  for (size_t j = 0; j <= k && !state.done(); ++j) {
    const TokenDistribution p = sampler.distribution(row(j), std::span<const int32_t>(drafts).first(j), allowed_at(j));
    int32_t token;
    bool accepted = false;
    if (j < k) {
      const DraftVerdict v = verify_draft(p, q[j], drafts[j], sampler.rng());
      token = v.token;
      accepted = v.accepted;
      state.stats.accepted_draft_tokens += accepted;
    } else {
      token = draw_token(p, sampler);  // every draft kept: the bonus token
    }
    sampler.accept(token);
    if (auto closing = base_.closing_instead_of(state, token)) {
      out += base_.close_output(state, *closing);  // the budget is nearly spent: complete the output now
      ++emitted;
      break;
    }
    out += base_.emit(state, with_logprobs(token, row(j), sampler.params()));
    ++emitted;
    if (!accepted) break;
  }
  // Keep what the plain loop would have fed by now: the last token and the drafts emitted before the newest
  // token (the newest is fed by the next step).
  seq.truncate(fed_before + static_cast<int64_t>(emitted));
  state.stats.draft_tokens += static_cast<int64_t>(k);
  ++state.stats.verify_steps;
  state.stats.decode_seconds += seconds_since(start);
  return out;
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
