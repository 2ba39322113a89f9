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
    const std::string out = base_.emit(state, sampler.sample(logits));
    state.stats.prefill_seconds += seconds_since(start);
    return out;
  }

  // Drafts past max_tokens or the context could never be emitted: propose at most what is left after the
  // token this step always produces.
  const int32_t last = state.tokens.back().token;  // chosen, not fed yet
  const int64_t budget = std::min(state.request.max_tokens - state.stats.generated_tokens,
                                  lm_.context_length() - seq.length()) - 1;
  const size_t k = static_cast<size_t>(std::clamp<int64_t>(budget, 0, draft_tokens_));

  std::vector<int32_t> drafts;
  std::vector<TokenDistribution> q;
  for (size_t j = 0; j < k; ++j) {
    const std::vector<float> logits = j == 0 ? lm_.draft(seq, last) : lm_.draft_more(seq, drafts.back());
    q.push_back(sampler.distribution(logits, drafts));
    drafts.push_back(draw_token(q.back(), sampler));
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
    const TokenDistribution p = sampler.distribution(row(j), std::span<const int32_t>(drafts).first(j));
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
