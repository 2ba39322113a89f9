// Verification of draft tokens in speculative decoding (Leviathan et al. 2023, "Fast Inference from Transformers
// via Speculative Decoding", §2.3; Chen et al. 2023, "Accelerating Large Language Model Decoding with Speculative
// Sampling", Algorithm 2). A cheap draft model proposes K tokens; the target model scores all of them in one
// forward pass; these functions decide how many to keep and which token follows them, so that the tokens that
// come out are distributed exactly as if the target model had been sampled alone, one token at a time.
//
// No model here: the caller turns logits into distributions with the same sampler chain for both models
// (Sampler::distribution), which is what makes the target distribution p the one plain sampling would use.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "sampling/rng.h"
#include "sampling/token_distribution.h"

namespace deepmoe {

// Greedy verification: how many leading drafts equal the target's argmax at their position. target_tokens[i] is
// the target's choice after the i-th draft's prefix (so drafts[i] is checked against target_tokens[i]).
size_t greedy_accept_length(std::span<const int32_t> drafts, std::span<const int32_t> target_tokens);

// The outcome of checking one draft token: kept, or replaced by a token drawn from the residual distribution.
struct DraftVerdict {
  bool accepted = false;
  int32_t token = -1;  // the draft when accepted, else the replacement
};

// Checks `draft` (drawn from `q`, the draft model's distribution) against `p`, the target's: keeps it with
// probability min(1, p(x) / q(x)); otherwise draws the replacement from norm(max(0, p - q)). Draws a uniform
// only when p(x) < q(x), and one more for a replacement with more than one candidate, so greedy verification
// (point masses on both sides) draws nothing. A draft that p rules out is always rejected, even if q gave it no mass (a draft not drawn from q).
DraftVerdict verify_draft(const TokenDistribution& p, const TokenDistribution& q, int32_t draft, Rng& rng);

// norm(max(0, p - q)) over p's tokens; p itself when that is empty (p == q up to rounding, where a rejection has
// probability zero anyway).
TokenDistribution residual_distribution(const TokenDistribution& p, const TokenDistribution& q);

// One verification step over precomputed distributions: p has drafts.size() + 1 entries (p[i] follows the first i
// drafts; the last one gives the bonus token when every draft is kept), q has drafts.size(). The result is the
// accepted drafts followed by exactly one more token (the replacement of the first rejected draft, or the bonus
// drawn from p.back(), without a random number when it is a point mass).
struct SpeculativeOutcome {
  std::vector<int32_t> tokens;
  size_t accepted_drafts = 0;
};
SpeculativeOutcome speculative_sample(std::span<const TokenDistribution> p, std::span<const TokenDistribution> q,
                                      std::span<const int32_t> drafts, Rng& rng);

}  // namespace deepmoe
