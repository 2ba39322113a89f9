// MoE dispatch and combine (DeepEP's contract, reference/deepseek_v3_system.md §4; DESIGN.md §4). The MoE layer
// is always route → dispatch → local experts → combine, even on one rank, so numerics never depend on the rank
// count:
//
//   dispatch: each rank's routed tokens go to the ranks hosting their experts. A layout step counts tokens per
//             rank and per expert and marks which ranks each token visits; a token travels ONCE per destination
//             rank (with the list of its experts there and their top-k weights). The payload is FP8 e4m3 with one
//             scale per 1×128 tile (act_quant semantics: scale = max(amax, 1e-4)/448, optionally rounded up to a
//             power of two — UE8M0), or BF16/F32. Every rank, even a lone one, quantizes its own tokens the
//             same way, so FP8 changes numerics identically for any rank count.
//   experts:  the receiving rank gets its rows grouped contiguously per LOCAL physical expert slot
//             (row_offsets, the layout of a contiguous grouped GEMM) and runs its experts on them.
//   combine:  each row's expert output is multiplied by its top-k weight on the expert side and returned to the
//             token's source rank as its own contribution (BF16 or F32); the source sums the contributions of a
//             token in k order — a fixed order — so the result is bitwise identical on 1, 2 or 4 ranks.
//             (DeepEP sums a rank's local experts before sending; that would tie the summation order to the
//             placement, so combine returns one row per (token, k) instead.)
//
// Redundant experts: a logical expert may have several replicas (ExpertPlacement). Before each all-to-all the
// ranks all-gather their per-logical-expert token counts; from those, every rank computes the same split of each
// replicated expert's tokens over its replicas (water-filling the least-loaded ranks), and a token's replica is
// given by its position in the global, rank-ordered token list of that expert. Replicas hold identical weights,
// so the choice never changes the numerics. The same global counts feed ExpertLoadStats.
//
// Two-phase forms (moe_dispatch_start/finish, moe_combine_start/finish) let compute overlap the payload
// all-to-all (two-micro-batch overlap, reference §6); the plain forms do both phases.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "core/tensor.h"
#include "parallel/communicator.h"
#include "parallel/expert_placement.h"

namespace deepmoe {

class ExpertLoadStats;
class ThreadPool;

enum class DispatchPayload : uint8_t { F32, BF16, FP8 };
enum class CombinePayload : uint8_t { F32, BF16 };

struct DispatchOptions {
  DispatchPayload payload = DispatchPayload::FP8;
  bool ue8m0_scales = false;  // FP8 only: power-of-two scales, as V3's dispatch sends them (paper §3.3)
  CombinePayload combine_payload = CombinePayload::F32;
  // Split replicated experts' tokens to balance per-rank load; false sends every token to the first replica.
  bool balance_replicas = true;
  ExpertLoadStats* stats = nullptr;  // when set, the global tokens per logical expert of this batch are recorded
  ThreadPool* pool = nullptr;        // packing and unpacking of rows
};

// DeepEP's get_dispatch_layout for this rank's tokens, after the replica choice.
struct DispatchLayout {
  int n_ranks = 0;
  std::vector<int64_t> tokens_per_rank;    // [n_ranks] tokens this rank sends to each rank
  std::vector<int64_t> entries_per_rank;   // [n_ranks] (token, expert) pairs this rank sends to each rank
  std::vector<int64_t> tokens_per_slot;    // [n_physical] (token, expert) pairs per physical slot
  std::vector<uint8_t> token_in_rank;      // [T, n_ranks] 1 when token t visits rank r
  std::vector<int32_t> slot_of_pair;       // [T, k] chosen physical slot, -1 where topk_idx is -1
};

// Tokens per physical slot for a batch with `tokens_per_logical` (global) routed pairs. Unreplicated experts'
// slots take all of theirs. Replicated experts start from EPLB's model (an equal share per replica); then, heaviest
// expert first and for two passes, each one's tokens are re-split over its ranks by water-filling with every
// other load fixed (the least-loaded ranks rise to a common level; ties and remainders to the lower rank), so the
// busiest rank is never heavier than under the equal split. A rank's share goes to its lowest replica slot. With
// balance=false every expert's tokens go to its first replica. [n_physical]
std::vector<int64_t> replica_quotas(const ExpertPlacement& placement, int layer,
                                    std::span<const int64_t> tokens_per_logical, bool balance = true);

// The layout of this rank's tokens. topk_idx is [T, k] of logical expert ids (-1 = none);
// tokens_per_logical_by_rank is the all-gathered [n_ranks, n_logical] count matrix of routed pairs and `rank`
// this rank's row in it. Throws Error for an expert id outside [-1, n_logical).
DispatchLayout compute_dispatch_layout(const ExpertPlacement& placement, int layer, std::span<const int64_t> topk_idx,
                                       int64_t n_tokens, int topk, int rank,
                                       std::span<const int64_t> tokens_per_logical_by_rank, bool balance = true);

// What combine needs to return rows to their sources (opaque to the caller; reusable only with the same dispatch).
struct DispatchHandle {
  int layer = 0;
  int64_t n_tokens = 0;  // tokens of this rank (source side)
  int topk = 0;
  int64_t hidden = 0;
  CombinePayload combine_payload = CombinePayload::F32;
  ThreadPool* pool = nullptr;
  // Expert side: entries received from each source rank, in arrival order, and the grouped row of each.
  std::vector<int64_t> entries_from_rank;  // [n_ranks]
  std::vector<int64_t> row_of_entry;       // [sum entries_from_rank]
  std::vector<float> weight_of_row;        // [rows]
  // Source side: entries sent to each rank, and the (token·k + j) pair of each, destination-major.
  std::vector<int64_t> entries_to_rank;  // [n_ranks]
  std::vector<int32_t> pair_of_entry;    // [sum entries_to_rank]
};

struct DispatchResult {
  Tensor x;         // [rows, hidden] F32: received token rows (dequantized payload), grouped by local slot
  Tensor x_fp8;     // [rows, hidden] F8_E4M3: the FP8 payload as received (only with DispatchPayload::FP8)
  Tensor x_scales;  // [rows, ceil(hidden/128)] F32: its 1×128 scales (a multiplier: x = x_fp8 · scale)
  // Rows of local slot s (logical expert placement.logical_of_local(layer, rank, s)) are
  // [row_offsets[s], row_offsets[s+1]). [slots_per_rank + 1]
  std::vector<int64_t> row_offsets;
  std::vector<float> row_weights;  // [rows] top-k weight of each row (combine applies it)
  DispatchLayout layout;           // this rank's send-side layout
  DispatchHandle handle;
};

// A dispatch whose payload all-to-all is in flight.
class PendingDispatch {
 public:
  PendingDispatch();
  PendingDispatch(PendingDispatch&&) noexcept;
  PendingDispatch& operator=(PendingDispatch&&) noexcept;
  ~PendingDispatch();
  bool test();              // progress; true when the payload has arrived
  DispatchResult finish();  // waits (with the communicator's deadline) and unpacks; call once

  struct State;

 private:
  std::unique_ptr<State> state_;
  friend PendingDispatch moe_dispatch_start(Communicator&, const ExpertPlacement&, int, const Tensor&, const Tensor&,
                                            const Tensor&, const DispatchOptions&);
};

class PendingCombine {
 public:
  PendingCombine();
  PendingCombine(PendingCombine&&) noexcept;
  PendingCombine& operator=(PendingCombine&&) noexcept;
  ~PendingCombine();
  bool test();
  Tensor finish();  // [T, hidden] F32

  struct State;

 private:
  std::unique_ptr<State> state_;
  friend PendingCombine moe_combine_start(Communicator&, const DispatchHandle&, const Tensor&);
};

// x: [T, hidden] F32 contiguous; topk_idx: [T, k] I32 or I64 logical expert ids (-1 = no expert);
// topk_weights: [T, k] F32. T may be 0 (the rank still takes part). Runs the count exchanges (blocking, with the
// communicator's deadline) and starts the payload all-to-all. Every rank must call it for the same layer.
PendingDispatch moe_dispatch_start(Communicator& comm, const ExpertPlacement& placement, int layer, const Tensor& x,
                                   const Tensor& topk_idx, const Tensor& topk_weights,
                                   const DispatchOptions& options = {});
DispatchResult moe_dispatch(Communicator& comm, const ExpertPlacement& placement, int layer, const Tensor& x,
                            const Tensor& topk_idx, const Tensor& topk_weights, const DispatchOptions& options = {});

// expert_out: [rows, hidden] F32, row i the (unweighted) expert output for dispatched row i. Returns
// y[t] = Σ_{j = 0..k-1, topk_idx[t,j] ≥ 0} w[t,j] · expert_out(row of (t, j)), summed in j order.
// The handle must outlive the pending combine.
PendingCombine moe_combine_start(Communicator& comm, const DispatchHandle& handle, const Tensor& expert_out);
Tensor moe_combine(Communicator& comm, const DispatchHandle& handle, const Tensor& expert_out);

}  // namespace deepmoe
