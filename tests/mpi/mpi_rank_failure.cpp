// Fault injection under `mpirun -np N` (reliability.md §3, D1/D3): the ranks run dispatch/combine rounds; after
// a few rounds rank 1 either kills itself (`die`) or stops answering (`hang`). The job must end on every rank
// with a non-zero status and a message, within the communication deadline, never hang.
#include <csignal>
#include <cstdio>
#include <cstring>
#include <thread>

#include "../parallel/dispatch_test_util.h"
#include "parallel/communicator.h"

using namespace deepmoe;
using namespace deepmoe::testing;

int main(int argc, char** argv) {
  const bool die = argc > 1 && std::strcmp(argv[1], "die") == 0;
  const bool hang = argc > 1 && std::strcmp(argv[1], "hang") == 0;
  if (!die && !hang) {
    std::fprintf(stderr, "usage: mpi_rank_failure die|hang\n");
    return 2;
  }
  auto comm = make_world_communicator();
  RoutedBatch b = make_routed_batch(64, 128, 12, 2, 5);
  auto placement = ExpertPlacement::uniform(1, 12, comm->size(), 0);
  auto [begin, end] = rank_token_range(b.n_tokens, comm->rank(), comm->size());
  auto s = slice_batch(b, begin, end);
  for (int round = 0; round < 1000000; ++round) {
    if (round == 3 && comm->rank() == 1) {
      std::fprintf(stderr, "rank 1: injected fault: %s\n", die ? "SIGKILL" : "hang");
      std::fflush(stderr);
      if (die) std::raise(SIGKILL);
      for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    DispatchResult d = moe_dispatch(*comm, placement, 0, s.x, s.idx, s.weights);
    moe_combine(*comm, d.handle, d.x);
  }
  return 0;
}
