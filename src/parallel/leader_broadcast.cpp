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

std::vector<std::byte> scatter_from_leader(Communicator& comm, std::vector<std::vector<std::byte>> parts,
                                           int64_t expected_bytes, CommClock::time_point deadline) {
  const bool leader = comm.rank() == 0;
  const size_t ranks = size_t(comm.size());
  if (leader && parts.size() != ranks)
    throw Error("scatter_from_leader: " + std::to_string(parts.size()) + " parts for " + std::to_string(ranks) +
                " ranks");
  if (ranks == 1) return leader ? std::move(parts[0]) : std::vector<std::byte>{};
  std::vector<int64_t> send_bytes(ranks, 0), send_offsets(ranks, 0), recv_bytes(ranks, 0), recv_offsets(ranks, 0);
  std::vector<std::byte> send;
  if (leader) {
    for (size_t r = 1; r < ranks; ++r) {
      send_offsets[r] = int64_t(send.size());
      send_bytes[r] = int64_t(parts[r].size());
      send.insert(send.end(), parts[r].begin(), parts[r].end());
    }
  } else {
    recv_bytes[0] = expected_bytes;
  }
  std::vector<std::byte> out(leader ? 0 : size_t(expected_bytes));
  comm.all_to_all_v(send.data(), send_bytes, send_offsets, out.data(), recv_bytes, recv_offsets)->wait(deadline);
  return leader ? std::move(parts[0]) : out;
}

std::vector<std::span<const std::byte>> gather_to_leader(Communicator& comm, std::span<const std::byte> bytes,
                                                         std::span<const int64_t> expected_bytes,
                                                         std::vector<std::byte>& storage,
                                                         CommClock::time_point deadline) {
  const bool leader = comm.rank() == 0;
  const size_t ranks = size_t(comm.size());
  if (leader && expected_bytes.size() != ranks)
    throw Error("gather_to_leader: " + std::to_string(expected_bytes.size()) + " counts for " +
                std::to_string(ranks) + " ranks");
  if (ranks == 1) return std::vector<std::span<const std::byte>>(leader ? 1 : 0);
  std::vector<int64_t> send_bytes(ranks, 0), send_offsets(ranks, 0), recv_bytes(ranks, 0), recv_offsets(ranks, 0);
  if (leader) {
    int64_t total = 0;
    for (size_t r = 1; r < ranks; ++r) {
      recv_offsets[r] = total;
      recv_bytes[r] = expected_bytes[r];
      total += expected_bytes[r];
    }
    if (storage.size() < size_t(total)) storage.resize(size_t(total));
  } else {
    send_bytes[0] = int64_t(bytes.size());
  }
  comm.all_to_all_v(bytes.data(), send_bytes, send_offsets, leader ? storage.data() : nullptr, recv_bytes,
                    recv_offsets)
      ->wait(deadline);
  std::vector<std::span<const std::byte>> out;
  if (!leader) return out;
  out.resize(ranks);
  for (size_t r = 1; r < ranks; ++r) out[r] = {storage.data() + recv_offsets[r], size_t(recv_bytes[r])};
  return out;
}

std::vector<std::vector<std::byte>> gather_to_leader(Communicator& comm, std::span<const std::byte> bytes,
                                                     std::span<const int64_t> expected_bytes,
                                                     CommClock::time_point deadline) {
  std::vector<std::byte> storage;
  const auto views = gather_to_leader(comm, bytes, expected_bytes, storage, deadline);
  std::vector<std::vector<std::byte>> out;
  for (const auto& v : views) out.emplace_back(v.begin(), v.end());
  return out;
}

}  // namespace deepmoe
