// Rank 0 tells every rank the same few values (the engine's step plan: what the next step is). Built on the
// all-to-all of the communicator, so it works for every communicator kind.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "parallel/communicator.h"

namespace deepmoe {

// How a rank waits for the broadcast: Busy polls as collectives do (the next step comes within microseconds);
// Patient polls like Busy for a few milliseconds, then sleeps between polls, so that a rank whose leader waits on
// a user or a network spends almost no CPU (a step then starts up to half a millisecond late).
enum class BroadcastWait { Busy, Patient };

// Collective. On rank 0, `values` holds exactly `n` values; the other ranks pass an empty span. Every rank returns
// rank 0's values. The wait ends at `deadline` (a follower waiting for a leader that waits on its user passes a
// far one; a dead leader ends the job through the launcher either way).
std::vector<int64_t> broadcast_from_leader(Communicator& comm, std::span<const int64_t> values, size_t n,
                                           CommClock::time_point deadline,
                                           BroadcastWait wait = BroadcastWait::Busy);

// Collective. Rank 0 sends parts[r] to rank r (parts has size() entries; parts[0] stays on rank 0 and is
// returned there); every other rank passes an empty `parts` and the byte count it was told to expect, and
// returns what rank 0 sent it.
std::vector<std::byte> scatter_from_leader(Communicator& comm, std::vector<std::vector<std::byte>> parts,
                                           int64_t expected_bytes, CommClock::time_point deadline);

// Collective, the way back. Every rank other than 0 sends `bytes` to rank 0; rank 0 passes the byte count it
// expects from each rank (size() entries; a rank that sends another count is an error) and returns each rank's
// bytes (entry 0 empty); the other ranks return nothing.
std::vector<std::vector<std::byte>> gather_to_leader(Communicator& comm, std::span<const std::byte> bytes,
                                                     std::span<const int64_t> expected_bytes,
                                                     CommClock::time_point deadline);
// The same, received into `storage` (rank 0; grown as needed, never shrunk) and returned as views into it (entry 0
// empty; valid until storage next changes). Made for the per-step logits: a buffer kept across steps is not
// allocated, zeroed and page-faulted again for every step, nor copied once more out of the receive buffer.
std::vector<std::span<const std::byte>> gather_to_leader(Communicator& comm, std::span<const std::byte> bytes,
                                                         std::span<const int64_t> expected_bytes,
                                                         std::vector<std::byte>& storage,
                                                         CommClock::time_point deadline);

}  // namespace deepmoe
