// One micro-batch through one MoE layer across the ranks (DESIGN.md §4): the model's gate routes the tokens,
// parallel/moe_dispatch.h sends each row to the ranks hosting its experts (always, even on one rank, so the
// numerics never depend on the rank count), the model's experts run on the rows that arrived, and the combine
// brings the weighted sums back; the shared experts overlap the combine.
//
// The layer is split into phases so that the executor can interleave two micro-batches (reference §6, prefill
// dual-batch overlap): while one micro-batch's dispatch or combine is in flight, the other computes. Whatever the
// interleaving, each token's result is computed by the same operations in the same order, so it is bitwise the
// one of moe_layer_forward().
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

// x [T, hidden] (post-attention-normed) must stay alive and unchanged until finish(); T may be 0 (a rank with no
// tokens still joins the collectives). Call in this order: start_dispatch, run_experts, run_shared, finish. Every
// rank must call start_dispatch and run_experts (which starts the combine) in the same order relative to its
// other MoE collectives.
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
void moe_layer_forward(const ForwardContext& ctx, const MoeWeights& w, const MoeRuntime& rt, const float* x,
                       int64_t T, float* out);

}  // namespace deepmoe
