// The stages of the sampler chain, each a plain function so each can be tested against its own reference.
// The chain (Sampler, sampler.h) runs them in the order vLLM and HF transformers use: penalties on the raw
// logits, then temperature, then top-k, top-p and min-p on the tempered distribution, then one draw.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace deepmoe {

struct Candidate {
  int32_t id;
  float logit;
};

// Orders candidates by descending logit, then ascending id, so every stage that sorts is deterministic.
bool candidate_before(const Candidate& a, const Candidate& b);

// CTRL repetition penalty: for each distinct token in `window`, a positive logit is divided by `penalty` and a
// negative one multiplied by it (Keskar et al. 2019 §4.1; the HF RepetitionPenaltyLogitsProcessor form).
void apply_repetition_penalty(std::span<float> logits, std::span<const int32_t> window, double penalty);

// OpenAI presence / frequency penalties: logit[j] -= count[j] * frequency + (count[j] > 0) * presence, where
// count[j] is how many times token j occurs in `generated`.
void apply_presence_frequency_penalties(std::span<float> logits, std::span<const int32_t> generated,
                                        double presence, double frequency);

// The grammar mask stage, first in the chain: logits of tokens whose bit in `allowed` is clear (bit id % 64
// of word id / 64; ids past the mask included) become -inf. The sampler knows nothing of grammars: any
// producer of such a bitmask (the grammar layer's token masks) plugs in here.
void apply_allowed_tokens(std::span<float> logits, std::span<const uint64_t> allowed);

// The index of the largest logit; the lowest index wins a tie. -1 when no logit is greater than -inf.
int32_t argmax(std::span<const float> logits);

// All tokens whose logit is above -inf (tokens a grammar mask removed stay out), with logits divided by
// `temperature` (> 0), in id order.
std::vector<Candidate> make_candidates(std::span<const float> logits, double temperature);

// Keeps the k best candidates (k > 0), sorted by candidate_before.
void keep_top_k(std::vector<Candidate>& candidates, int64_t k);

// Keeps the shortest prefix of the candidates, ranked by candidate_before, whose softmax probability sum
// reaches top_p (always at least one). The probabilities are those of the candidates present: as after HF's
// TopKLogitsWarper, the tokens removed by an earlier stage carry no mass. The order of the kept candidates is
// unspecified (only the block that crosses top_p gets sorted).
void keep_top_p(std::vector<Candidate>& candidates, double top_p);

// Puts candidates (distinct ids below vocab_size) in id order, the canonical order draw() walks, so a seed
// picks the same token whatever order a standard library's selection algorithms left them in.
void sort_by_id(std::vector<Candidate>& candidates, int64_t vocab_size);

// Keeps the candidates whose probability is at least min_p times the largest one (Nguyen et al. 2024, "min-p
// sampling"). Candidate order is preserved.
void keep_min_p(std::vector<Candidate>& candidates, double min_p);

// Softmax of the candidates' logits in double, in candidate order.
std::vector<double> candidate_probabilities(std::span<const Candidate> candidates);

// Picks one candidate by inverse CDF: the first whose cumulative probability (in candidate order) exceeds
// u * total, u uniform in [0, 1). One random number per token, computed in double, so a seed gives the same
// token on every build.
int32_t draw(std::span<const Candidate> candidates, double u);

}  // namespace deepmoe
