// Switching to a new expert placement at a batch boundary (paper §3.4: the redundant set is re-chosen
// periodically from online statistics). Between two batches every rank calls rebalance_placement() on its
// identical load statistics (dispatch records global counts), then migrate_expert_slots() for each layer to move
// the per-slot expert weights to where the new placement wants them, then uses the new placement for the next
// batch. No request sees a half-moved layer: the switch happens between forward calls, and since replicas hold
// identical weights the next batch's results are bitwise the same as under the old placement.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/expert_placement.h"

namespace deepmoe {

class ExpertLoadStats;

// EPLB over the statistics' window (eplb.h: hierarchical when groups % nodes == 0, else global) → a placement with
// n_physical slots over n_ranks. Throws Error when the shape is impossible.
ExpertPlacement rebalance_placement(const ExpertLoadStats& stats, int n_ranks, int n_physical, int n_groups,
                                    int n_nodes);

// Where new local slot s of `rank` takes its weights from under the old placement: the same rank when it already
// hosts that logical expert (its first such slot), otherwise old replica (new physical id mod replicas).
struct SlotSource {
  int rank = 0;
  int local_slot = 0;
};
std::vector<SlotSource> plan_slot_sources(const ExpertPlacement& old_placement, const ExpertPlacement& new_placement,
                                          int layer, int rank);

// Collective: old_slots holds this rank's old_placement.slots_per_rank() blobs of bytes_per_slot bytes (one per
// local slot, e.g. a routed expert's FP8 w1/w2/w3 and scales packed together); new_slots receives
// new_placement.slots_per_rank() blobs laid out the same way. Every blob crosses the network at most once.
void migrate_expert_slots(Communicator& comm, const ExpertPlacement& old_placement,
                          const ExpertPlacement& new_placement, int layer, int64_t bytes_per_slot,
                          const void* old_slots, void* new_slots);

// Collective, per-slot form that copies only what crosses ranks: pack_old(s, blob) writes old local slot s into
// blob[bytes_per_slot] and is called only for slots some other rank takes; new_slots[s] (new_placement
// .slots_per_rank() entries) receives new local slot s when it comes from another rank. New slots whose source
// (plan_slot_sources) is this rank are not touched: the caller reuses its own old slot in place.
void migrate_expert_slots(Communicator& comm, const ExpertPlacement& old_placement,
                          const ExpertPlacement& new_placement, int layer, int64_t bytes_per_slot,
                          const std::function<void(int old_local_slot, void* blob)>& pack_old,
                          std::span<void* const> new_slots);

}  // namespace deepmoe
