// DeepSeekMoE layer (reference §1.7; DESIGN.md §4): route → dispatch → local experts → combine, plus the shared
// experts, always through parallel/moe_dispatch.h even on one rank so the numerics never depend on the rank count.
// Local experts of a rank run as grouped GEMMs over their contiguous row groups: gate/up → SwiGLU → down.
#pragma once

#include <cstdint>

#include "model/forward_context.h"
#include "model/model_weights.h"

namespace deepmoe {

class Communicator;
class ExpertPlacement;
enum class DispatchPayload : uint8_t;

struct MoeRuntime {
  Communicator* comm = nullptr;
  const ExpertPlacement* placement = nullptr;
  int placement_layer = 0;  // this layer's index in the placement (MoE layers in order, MTP last)
  DispatchPayload payload;  // token rows in flight: F32 for w8a32, FP8 1×128 for w8a8 (paper §3.3)
};

// Dense SwiGLU MLP: out[T, hidden] = down(silu(gate x) · up x).
void mlp_forward(const ForwardContext& ctx, const MlpWeights& w, const float* x, int64_t T, float* out);

// x [T, hidden] (post-attention-normed) → out [T, hidden] = routed + shared.
void moe_forward(const ForwardContext& ctx, const MoeWeights& w, const MoeRuntime& rt, const float* x, int64_t T,
                 float* out);

}  // namespace deepmoe
