// The communicator of expert parallelism (DESIGN.md §4): one interface, three implementations —
// a single rank, N ranks as threads in one process (thread_communicator.h), and MPI (only communicator.cpp's
// factory and mpi_communicator.cpp know about MPI; nothing outside src/parallel/ includes mpi.h).
//
// Every wait has a deadline. A dead or silent peer must never hang the job (the reliability checklist §3, D1/D3):
// with threads a timeout is a deepmoe::Error naming the operation and the peers not heard from; under MPI the
// collective state after a failure is undefined, so a timeout prints the same message and calls MPI_Abort, which
// ends every rank with a non-zero status.
//
// Data is moved as raw bytes with explicit per-peer counts; the receiver states how many bytes it expects from
// each peer and a mismatch is an error, never a buffer overrun (no code-bearing serialization, D5).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace deepmoe {

using CommClock = std::chrono::steady_clock;

// Default deadline of one communication wait; DEEPMOE_COMM_TIMEOUT_S in the environment overrides it when a
// communicator is created (read once, at construction).
constexpr std::chrono::milliseconds kDefaultCommTimeout{30000};
std::chrono::milliseconds comm_timeout_from_env();

// A non-blocking operation in flight. The buffers handed to the operation must stay alive and untouched until
// wait() returns (or test() returned true). Destroying an unfinished request waits for it with the default
// deadline, since a peer may still be reading the send buffer.
class CommRequest {
 public:
  virtual ~CommRequest() = default;
  // Makes progress; true once the operation has completed on this rank.
  virtual bool test() = 0;
  // Blocks until completion or the deadline; a missed deadline is an Error (threads) or MPI_Abort (MPI).
  virtual void wait(CommClock::time_point deadline) = 0;
  // wait() with the communicator's timeout from now.
  virtual void wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "single", "threads" or "mpi".
  virtual std::string kind() const = 0;

  std::chrono::milliseconds timeout() const { return timeout_; }
  void set_timeout(std::chrono::milliseconds t) { timeout_ = t; }
  CommClock::time_point deadline_from_now() const { return CommClock::now() + timeout_; }

  // Non-blocking all-to-all(v) of bytes. send_bytes[p] bytes starting at send + send_offsets[p] go to rank p;
  // recv_bytes[p] bytes from rank p land at recv + recv_offsets[p]. Every span has size() entries. What rank p
  // sends to this rank must be exactly recv_bytes[p] (else an Error naming p). All ranks must start the same
  // sequence of collectives in the same order.
  virtual std::unique_ptr<CommRequest> all_to_all_v(const void* send, std::span<const int64_t> send_bytes,
                                                    std::span<const int64_t> send_offsets, void* recv,
                                                    std::span<const int64_t> recv_bytes,
                                                    std::span<const int64_t> recv_offsets) = 0;

  // Blocking all-gather of a few counts: every rank gives the same number n of values; the result holds
  // size()·n values, rank-major.
  virtual std::vector<int64_t> all_gather(std::span<const int64_t> values) = 0;

  virtual void barrier() = 0;

  // Ends the job after a fatal error on this rank: MPI_Abort under MPI (every rank exits non-zero); with threads
  // every other rank's pending or later wait fails at once with `reason`.
  virtual void abort(const std::string& reason) = 0;

 protected:
  std::chrono::milliseconds timeout_ = comm_timeout_from_env();
};

// The communicator of a process that is not part of a larger job.
class SingleRankCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string kind() const override { return "single"; }
  std::unique_ptr<CommRequest> all_to_all_v(const void* send, std::span<const int64_t> send_bytes,
                                            std::span<const int64_t> send_offsets, void* recv,
                                            std::span<const int64_t> recv_bytes,
                                            std::span<const int64_t> recv_offsets) override;
  std::vector<int64_t> all_gather(std::span<const int64_t> values) override;
  void barrier() override {}
  void abort(const std::string& reason) override;
};

// True when this build has MPI support.
bool mpi_compiled();
// True when this process was started by an MPI launcher (mpirun/srun set the rank in the environment).
bool launched_by_mpi();

// The communicator of this process: MPI_COMM_WORLD when compiled with MPI and launched by mpirun (MPI is
// initialized here and finalized when the returned object is destroyed; at most one may exist), otherwise a
// single rank.
std::unique_ptr<Communicator> make_world_communicator();

}  // namespace deepmoe
