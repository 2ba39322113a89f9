#include "parallel/expert_migration.h"

#include <cstring>
#include <string>

#include "core/error.h"
#include "parallel/eplb.h"
#include "parallel/expert_load_stats.h"

namespace deepmoe {

ExpertPlacement rebalance_placement(const ExpertLoadStats& stats, int n_ranks, int n_physical, int n_groups,
                                    int n_nodes) {
  eplb::Matrix weight;
  for (const auto& row : stats.eplb_weight()) weight.emplace_back(row.begin(), row.end());
  eplb::Result plan = eplb::rebalance_experts(weight, n_physical, n_groups, n_nodes, n_ranks);
  return ExpertPlacement::from_phy2log(plan.phy2log, stats.n_logical(), n_ranks);
}

std::vector<SlotSource> plan_slot_sources(const ExpertPlacement& old_p, const ExpertPlacement& new_p, int layer,
                                          int rank) {
  const int S = new_p.slots_per_rank();
  std::vector<SlotSource> out(static_cast<size_t>(S));
  for (int s = 0; s < S; ++s) {
    const int phys = new_p.first_slot_of_rank(rank) + s;
    const int logical = new_p.phy2log(layer)[size_t(phys)];
    auto old_replicas = old_p.replicas(layer, logical);
    int chosen = -1;
    for (int slot : old_replicas)
      if (old_p.rank_of_slot(slot) == rank) {
        chosen = slot;
        break;
      }
    if (chosen < 0) chosen = old_replicas[size_t(phys) % old_replicas.size()];
    out[size_t(s)] = {old_p.rank_of_slot(chosen), old_p.local_index_of_slot(chosen)};
  }
  return out;
}

void migrate_expert_slots(Communicator& comm, const ExpertPlacement& old_p, const ExpertPlacement& new_p, int layer,
                          int64_t bytes_per_slot, const std::function<void(int, void*)>& pack_old,
                          std::span<void* const> new_slots) {
  if (old_p.n_logical() != new_p.n_logical() || old_p.n_ranks() != new_p.n_ranks() ||
      old_p.n_ranks() != comm.size())
    throw Error("expert migration: the old placement (" + std::to_string(old_p.n_logical()) + " experts, " +
                std::to_string(old_p.n_ranks()) + " ranks) and the new one (" + std::to_string(new_p.n_logical()) +
                " experts, " + std::to_string(new_p.n_ranks()) + " ranks) do not fit a job of " +
                std::to_string(comm.size()) + " ranks");
  if (bytes_per_slot <= 0) throw Error("expert migration: bytes_per_slot must be positive");
  if (int64_t(new_slots.size()) != new_p.slots_per_rank())
    throw Error("expert migration: " + std::to_string(new_slots.size()) + " destination slots for a placement of " +
                std::to_string(new_p.slots_per_rank()) + " slots per rank");
  const int R = comm.size(), me = comm.rank();
  // Plans of every rank (cheap: slots_per_rank entries each), so each rank knows what it must send.
  std::vector<std::vector<SlotSource>> plans(static_cast<size_t>(R));
  for (int r = 0; r < R; ++r) plans[size_t(r)] = plan_slot_sources(old_p, new_p, layer, r);
  std::vector<int64_t> send_bytes(static_cast<size_t>(R), 0), send_offsets(static_cast<size_t>(R), 0);
  std::vector<int64_t> recv_bytes(static_cast<size_t>(R), 0), recv_offsets(static_cast<size_t>(R), 0);
  std::vector<std::vector<int>> send_slots(static_cast<size_t>(R));  // old local slots to send to each rank
  for (int d = 0; d < R; ++d) {
    if (d == me) continue;
    for (const SlotSource& s : plans[size_t(d)])
      if (s.rank == me) send_slots[size_t(d)].push_back(s.local_slot);
  }
  for (const SlotSource& s : plans[size_t(me)])
    if (s.rank != me) recv_bytes[size_t(s.rank)] += bytes_per_slot;
  int64_t send_total = 0, recv_total = 0;
  for (int r = 0; r < R; ++r) {
    send_bytes[size_t(r)] = int64_t(send_slots[size_t(r)].size()) * bytes_per_slot;
    send_offsets[size_t(r)] = send_total;
    send_total += send_bytes[size_t(r)];
    recv_offsets[size_t(r)] = recv_total;
    recv_total += recv_bytes[size_t(r)];
  }
  std::vector<char> send(static_cast<size_t>(send_total)), recv(static_cast<size_t>(recv_total));
  for (int r = 0; r < R; ++r)
    for (size_t i = 0; i < send_slots[size_t(r)].size(); ++i)
      pack_old(send_slots[size_t(r)][i], send.data() + send_offsets[size_t(r)] + int64_t(i) * bytes_per_slot);
  comm.all_to_all_v(send.data(), send_bytes, send_offsets, recv.data(), recv_bytes, recv_offsets)->wait();
  // Blobs from rank r arrive in the order of this rank's new slots that take from r.
  std::vector<int64_t> taken(static_cast<size_t>(R), 0);
  const auto& mine = plans[size_t(me)];
  for (size_t s = 0; s < mine.size(); ++s) {
    if (mine[s].rank == me) continue;
    const int r = mine[s].rank;
    if (!new_slots[s]) throw Error("expert migration: no destination for new slot " + std::to_string(s));
    std::memcpy(new_slots[s], recv.data() + recv_offsets[size_t(r)] + taken[size_t(r)]++ * bytes_per_slot,
                size_t(bytes_per_slot));
  }
}

void migrate_expert_slots(Communicator& comm, const ExpertPlacement& old_p, const ExpertPlacement& new_p, int layer,
                          int64_t bytes_per_slot, const void* old_slots, void* new_slots) {
  if (bytes_per_slot <= 0) throw Error("expert migration: bytes_per_slot must be positive");
  const char* src = static_cast<const char*>(old_slots);
  char* dst = static_cast<char*>(new_slots);
  std::vector<void*> slots;
  for (int s = 0; s < new_p.slots_per_rank(); ++s) slots.push_back(dst + int64_t(s) * bytes_per_slot);
  migrate_expert_slots(
      comm, old_p, new_p, layer, bytes_per_slot,
      [&](int slot, void* blob) { std::memcpy(blob, src + int64_t(slot) * bytes_per_slot, size_t(bytes_per_slot)); },
      slots);
  // New slots that this rank sources itself: a local copy.
  const auto mine = plan_slot_sources(old_p, new_p, layer, comm.rank());
  for (size_t s = 0; s < mine.size(); ++s)
    if (mine[s].rank == comm.rank())
      std::memcpy(dst + int64_t(s) * bytes_per_slot, src + int64_t(mine[s].local_slot) * bytes_per_slot,
                  size_t(bytes_per_slot));
}

}  // namespace deepmoe
