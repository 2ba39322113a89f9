// N ranks as threads in one process: tests of expert parallelism, and one machine without MPI. The ranks share
// a ThreadHub; each thread uses its own communicator from hub.communicator(r). Collectives are matched by their
// sequence number on each rank, so — as with MPI — all ranks must issue the same collectives in the same order.
#pragma once

#include <functional>
#include <memory>

#include "parallel/communicator.h"

namespace deepmoe {

class ThreadHub {
 public:
  explicit ThreadHub(int n_ranks);
  ~ThreadHub();
  ThreadHub(const ThreadHub&) = delete;
  ThreadHub& operator=(const ThreadHub&) = delete;

  int size() const;
  // The communicator of rank r; it lives as long as the hub.
  Communicator& communicator(int rank);
  // The rank whose abort() came first, or -1 when none aborted.
  int first_failed_rank() const;

  struct State;  // shared between the ranks' communicators (thread_communicator.cpp)

 private:
  std::unique_ptr<State> state_;
  std::vector<std::unique_ptr<Communicator>> comms_;
};

// Runs fn(comm) on n_ranks threads sharing one hub (rank 0 on the calling thread) and joins them. When a rank
// throws, the hub is aborted so that the other ranks' waits fail instead of hanging, and the first rank's
// exception (in rank order, preferring the original failure over the aborts it caused) is rethrown.
void run_thread_ranks(int n_ranks, const std::function<void(Communicator& comm)>& fn);

}  // namespace deepmoe
