// DeepSeekMoE layer (reference §1.7; DESIGN.md §4): route → dispatch → local experts → combine, plus the shared
// experts, always through parallel/moe_dispatch.h even on one rank so the numerics never depend on the rank count.
// Local experts of a rank run as grouped GEMMs over their contiguous row groups: gate/up → SwiGLU → down.
//
// The layer is split into phases (MoeLayerRun) so that the model can interleave two micro-batches (reference §6,
// prefill dual-batch overlap): while one micro-batch's dispatch or combine is in flight, the other computes.
// Whatever the interleaving, each token's result is computed by the same operations in the same order, so it is
// bitwise the one of moe_forward().
#pragma once

#include <cstdint>
#include <memory>

#include "model/forward_context.h"
#include "model/model_weights.h"

namespace deepmoe {

class Communicator;
class ExpertPlacement;
class ExpertLoadStats;
class TraceRecorder;
enum class DispatchPayload : uint8_t;

struct MoeRuntime {
  Communicator* comm = nullptr;
  const ExpertPlacement* placement = nullptr;
  int placement_layer = 0;  // this layer's index in the placement (MoE layers in order, MTP last)
  DispatchPayload payload;  // token rows in flight: F32 for w8a32, FP8 1×128 for w8a8 (paper §3.3)
  ExpertLoadStats* stats = nullptr;  // when set, dispatch records the global tokens per logical expert
  TraceRecorder* trace = nullptr;    // when set, compute and communication spans are recorded
  int micro_batch = 0;               // the trace's micro-batch label
};

// Dense SwiGLU MLP: out[T, hidden] = down(silu(gate x) · up x).
void mlp_forward(const ForwardContext& ctx, const MlpWeights& w, const float* x, int64_t T, float* out);

// One micro-batch through one MoE layer, phase by phase. x [T, hidden] (post-attention-normed) must stay alive and
// unchanged until finish(). Call in this order: start_dispatch, run_experts, run_shared, finish. Every rank must
// call start_dispatch and run_experts (which starts the combine) in the same order relative to its other MoE
// collectives.
class MoeLayerRun {
 public:
  MoeLayerRun(const ForwardContext& ctx, const MoeWeights& w, const MoeRuntime& rt, const float* x, int64_t T);
  ~MoeLayerRun();
  MoeLayerRun(const MoeLayerRun&) = delete;
  MoeLayerRun& operator=(const MoeLayerRun&) = delete;

  // Gate (route) and the dispatch's count exchange; leaves the payload all-to-all in flight.
  void start_dispatch();
  // Waits for the dispatched rows, runs this rank's experts on them and leaves the combine in flight.
  void run_experts();
  // Shared experts z = shared_experts(x) (compute only; overlaps the combine).
  void run_shared();
  // Waits for the combine: out[T, hidden] = y + z (model.py's order).
  void finish(float* out);
  // Lets in-flight communication progress (MPI progresses non-blocking collectives only inside MPI calls).
  void poll();

  struct State;

 private:
  std::unique_ptr<State> st_;
};

// x [T, hidden] (post-attention-normed) → out [T, hidden] = routed + shared: all phases in a row.
void moe_forward(const ForwardContext& ctx, const MoeWeights& w, const MoeRuntime& rt, const float* x, int64_t T,
                 float* out);

}  // namespace deepmoe
