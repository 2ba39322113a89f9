// Where the routed experts live: per MoE layer, the map from physical expert slots to logical experts and back,
// in EPLB's vocabulary (reference/deepseek_v3_system.md §3): phy2log[n_physical], logcnt[n_logical] (replicas
// per logical expert) and log2phy[n_logical][max_replicas] (-1 padded). Rank r hosts the contiguous physical
// slots [r·slots_per_rank, (r+1)·slots_per_rank), as a GPU does in EPLB. Replicas of one logical expert hold
// identical weights, so which replica a token visits never changes the numerics.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace deepmoe {

class ExpertPlacement {
 public:
  ExpertPlacement() = default;

  // Validates and builds from phy2log per layer (every logical expert in [0, n_logical) must appear at least
  // once; n_physical must be the same on every layer and a multiple of n_ranks). Throws Error when invalid.
  static ExpertPlacement from_phy2log(const std::vector<std::vector<int>>& phy2log, int n_logical, int n_ranks);

  // Without load information: physical slot i hosts logical expert i % n_logical, so with n_redundant > 0 the
  // first n_redundant experts get a second replica at the end. n_logical + n_redundant must divide by n_ranks.
  static ExpertPlacement uniform(int n_layers, int n_logical, int n_ranks, int n_redundant = 0);

  int n_layers() const { return n_layers_; }
  int n_logical() const { return n_logical_; }
  int n_physical() const { return n_physical_; }
  int n_ranks() const { return n_ranks_; }
  int slots_per_rank() const { return n_physical_ / n_ranks_; }
  int max_replicas(int layer) const { return max_replicas_[size_t(layer)]; }

  std::span<const int> phy2log(int layer) const;
  std::span<const int> logcnt(int layer) const;
  // The physical slots hosting a logical expert, in increasing order (logcnt entries).
  std::span<const int> replicas(int layer, int logical) const;
  // log2phy padded to max_replicas with -1, row-major [n_logical, max_replicas] (EPLB's layout).
  std::vector<int> log2phy_padded(int layer) const;

  int rank_of_slot(int physical) const { return physical / slots_per_rank(); }
  int local_index_of_slot(int physical) const { return physical % slots_per_rank(); }
  int first_slot_of_rank(int rank) const { return rank * slots_per_rank(); }
  // Logical expert held by local slot `local` of `rank`.
  int logical_of_local(int layer, int rank, int local) const {
    return phy2log(layer)[size_t(first_slot_of_rank(rank) + local)];
  }

  bool operator==(const ExpertPlacement& o) const;

 private:
  int n_layers_ = 0, n_logical_ = 0, n_physical_ = 0, n_ranks_ = 1;
  std::vector<int> phy2log_;      // [n_layers, n_physical]
  std::vector<int> logcnt_;       // [n_layers, n_logical]
  std::vector<int> replica_ofs_;  // [n_layers, n_logical + 1] offsets into replica_slots_
  std::vector<int> replica_slots_;
  std::vector<int> max_replicas_;  // [n_layers]
};

}  // namespace deepmoe
