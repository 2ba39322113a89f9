#include "parallel/leader_broadcast.h"

#include <chrono>
#include <thread>

#include "core/error.h"

namespace deepmoe {

std::vector<int64_t> broadcast_from_leader(Communicator& comm, std::span<const int64_t> values, size_t n,
                                           CommClock::time_point deadline, BroadcastWait wait) {
  const bool leader = comm.rank() == 0;
  if (leader && values.size() != n)
    throw Error("broadcast_from_leader: rank 0 gives " + std::to_string(values.size()) + " values, expected " +
                std::to_string(n));
  const size_t ranks = size_t(comm.size());
  const int64_t bytes = int64_t(n * sizeof(int64_t));
  std::vector<int64_t> send_bytes(ranks, leader ? bytes : 0), send_offsets(ranks, 0);
  std::vector<int64_t> recv_bytes(ranks, 0), recv_offsets(ranks, 0);
  recv_bytes[0] = bytes;
  std::vector<int64_t> out(n);
  auto request = comm.all_to_all_v(leader ? values.data() : nullptr, send_bytes, send_offsets, out.data(),
                                   recv_bytes, recv_offsets);
  if (wait == BroadcastWait::Patient) {
    constexpr auto kBusyFor = std::chrono::milliseconds(20);
    constexpr auto kNap = std::chrono::microseconds(500);
    const auto start = CommClock::now();
    while (!request->test()) {
      const auto now = CommClock::now();
      if (now >= deadline) break;  // wait() below reports the missed deadline as every wait does
      if (now - start < kBusyFor)
        std::this_thread::yield();
      else
        std::this_thread::sleep_for(kNap);
    }
  }
  request->wait(deadline);
  return out;
}

}  // namespace deepmoe
