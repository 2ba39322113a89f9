// The MoE router (reference §1.6; HF modeling_deepseek MoEGate for V2 and V3), applied per token row so that a
// token's choice never depends on the rest of the batch.
//
// V3 (scoring_func sigmoid, topk_method noaux_tc): s = sigmoid(logits); choice = s + e_score_correction_bias
// (the bias is used ONLY to choose); group score = sum of the top-2 choice values in each of n_group groups; keep
// topk_group groups; top-k over the kept experts; weights = the UNBIASED s of the chosen experts, divided by their
// sum (+1e-20) when norm_topk_prob, then × routed_scaling_factor.
// V2 (softmax): s = softmax(logits) in FP32; greedy = top-k over all experts; group_limited_greedy = group score
// is the max of the group, keep topk_group groups, then top-k. Weights = s of the chosen experts, divided by their
// sum (+1e-20) when k > 1 and norm_topk_prob, otherwise × routed_scaling_factor (HF DeepseekV2 MoEGate).
#pragma once

#include <cstdint>

namespace deepmoe {

struct ModelConfig;

// logits [T, n_routed_experts] (x · gate.weightᵀ); bias [n_routed_experts] or nullptr. Writes topk_idx [T, k] and
// topk_weight [T, k], k = num_experts_per_tok, in selection order (largest choice value first).
void route_tokens(const ModelConfig& cfg, const float* logits, const float* bias, int64_t T, int32_t* topk_idx,
                  float* topk_weight);

}  // namespace deepmoe
