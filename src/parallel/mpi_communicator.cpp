#include "parallel/mpi_communicator.h"

#include "core/error.h"

#ifdef DEEPMOE_HAVE_MPI

#include <mpi.h>

#include <climits>
#include <cstdio>
#include <exception>
#include <thread>

namespace deepmoe {
namespace {

// A missed deadline under MPI cannot be recovered from: the pending collective may still touch its buffers and
// the standard leaves the state after a failure undefined (reliability.md §3, D1/D3). So report and end the job.
[[noreturn]] void abort_on_timeout(int rank, const std::string& op, uint64_t seq, double seconds) {
  std::fprintf(stderr,
               "deepmoe: error: rank %d: %s (collective #%llu) timed out after %.1f s: a peer rank died or stopped "
               "answering; aborting the job\n",
               rank, op.c_str(), static_cast<unsigned long long>(seq), seconds);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::abort();  // MPI_Abort does not return; keep the compiler and any odd implementation honest
}

int to_int_count(int64_t v, const char* what) {
  if (v < 0 || v > INT_MAX)
    throw Error(std::string("MPI all_to_all_v: ") + what + " of " + std::to_string(v) +
                " units is outside what one MPI call can move (0.." + std::to_string(INT_MAX) + ")");
  return int(v);
}

class MpiCommunicator;

class MpiRequest final : public CommRequest {
 public:
  MpiRequest(MpiCommunicator* comm, std::string op, uint64_t seq) : comm_(comm), op_(std::move(op)), seq_(seq) {}
  ~MpiRequest() override {
    if (!done_) wait();
  }
  MPI_Request* handle() { return &request_; }
  bool test() override {
    if (done_) return true;
    int flag = 0;
    MPI_Test(&request_, &flag, MPI_STATUS_IGNORE);
    done_ = flag != 0;
    return done_;
  }
  void wait(CommClock::time_point deadline) override;
  void wait() override;

  // Buffers the request owns (counts and displacements must outlive a non-blocking MPI call).
  std::vector<int> counts_and_displs;

 private:
  MpiCommunicator* comm_;
  std::string op_;
  uint64_t seq_;
  MPI_Request request_ = MPI_REQUEST_NULL;
  bool done_ = false;
};

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (initialized) throw Error("MPI is already initialized: only one MPI world communicator may exist");
    // Serialized: one thread at a time calls MPI, but not always the main one (the server's engine runs on its
    // backend thread).
    int provided = 0;
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
    if (provided < MPI_THREAD_SERIALIZED)
      throw Error("this MPI library does not support calls from more than one thread (MPI_THREAD_SERIALIZED)");
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    MPI_Type_contiguous(8, MPI_BYTE, &bytes8_);
    MPI_Type_commit(&bytes8_);
    MPI_Type_contiguous(64, MPI_BYTE, &bytes64_);
    MPI_Type_commit(&bytes64_);
  }
  ~MpiCommunicator() override {
    // Leaving because of an exception on this rank: the others may be waiting in a collective; end them all
    // rather than letting MPI_Finalize hang.
    if (std::uncaught_exceptions() > 0) {
      std::fprintf(stderr, "deepmoe: error: rank %d failed; aborting the job\n", rank_);
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Type_free(&bytes8_);
    MPI_Type_free(&bytes64_);
    MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string kind() const override { return "mpi"; }

  std::unique_ptr<CommRequest> all_to_all_v(const void* send, std::span<const int64_t> send_bytes,
                                            std::span<const int64_t> send_offsets, void* recv,
                                            std::span<const int64_t> recv_bytes,
                                            std::span<const int64_t> recv_offsets) override {
    const size_t n = size_t(size_);
    DEEPMOE_CHECK(send_bytes.size() == n && send_offsets.size() == n && recv_bytes.size() == n &&
                  recv_offsets.size() == n);
    auto request = std::make_unique<MpiRequest>(this, "all_to_all_v", ++seq_);
    // MPI counts and displacements are ints; moving the bytes as units of 64 or 8 contiguous bytes when every
    // count and offset of a side allows it raises the per-call limit from 2 GiB to 128 or 16 GiB. Each side may
    // choose its unit independently: both type signatures are sequences of MPI_BYTE.
    const int send_unit = common_unit(send_bytes, send_offsets), recv_unit = common_unit(recv_bytes, recv_offsets);
    std::vector<int>& v = request->counts_and_displs;
    v.resize(4 * n);
    for (size_t p = 0; p < n; ++p) {
      v[p] = to_int_count(send_bytes[p] / send_unit, "send count");
      v[n + p] = to_int_count(send_offsets[p] / send_unit, "send offset");
      v[2 * n + p] = to_int_count(recv_bytes[p] / recv_unit, "receive count");
      v[3 * n + p] = to_int_count(recv_offsets[p] / recv_unit, "receive offset");
    }
    MPI_Ialltoallv(send, v.data(), v.data() + n, unit_type(send_unit), recv, v.data() + 2 * n, v.data() + 3 * n,
                   unit_type(recv_unit), MPI_COMM_WORLD, request->handle());
    return request;
  }

  std::vector<int64_t> all_gather(std::span<const int64_t> values) override {
    std::vector<int64_t> out(values.size() * size_t(size_));
    MpiRequest request(this, "all_gather", ++seq_);
    MPI_Iallgather(values.data(), int(values.size()), MPI_INT64_T, out.data(), int(values.size()), MPI_INT64_T,
                   MPI_COMM_WORLD, request.handle());
    request.wait();
    return out;
  }

  void barrier() override {
    MpiRequest request(this, "barrier", ++seq_);
    MPI_Ibarrier(MPI_COMM_WORLD, request.handle());
    request.wait();
  }

  void abort(const std::string& reason) override {
    std::fprintf(stderr, "deepmoe: error: rank %d: %s; aborting the job\n", rank_, reason.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::abort();
  }

 private:
  static int common_unit(std::span<const int64_t> counts, std::span<const int64_t> offsets) {
    int64_t all = 0;
    for (size_t i = 0; i < counts.size(); ++i) all |= counts[i] | offsets[i];
    return all % 64 == 0 ? 64 : all % 8 == 0 ? 8 : 1;
  }
  MPI_Datatype unit_type(int unit) const { return unit == 64 ? bytes64_ : unit == 8 ? bytes8_ : MPI_BYTE; }

  int rank_ = 0;
  int size_ = 1;
  uint64_t seq_ = 0;
  MPI_Datatype bytes8_ = MPI_DATATYPE_NULL, bytes64_ = MPI_DATATYPE_NULL;
};

void MpiRequest::wait(CommClock::time_point deadline) {
  const auto start = CommClock::now();
  // Non-blocking MPI collectives progress only inside MPI calls, so poll; yield first (low latency), then
  // sleep briefly so that oversubscribed ranks do not starve each other.
  for (int spins = 0; !test(); ++spins) {
    auto now = CommClock::now();
    if (now > deadline)
      abort_on_timeout(comm_->rank(), op_, seq_, std::chrono::duration<double>(now - start).count());
    if (spins < 2000)
      std::this_thread::yield();
    else
      std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

void MpiRequest::wait() { wait(comm_->deadline_from_now()); }

}  // namespace

bool mpi_compiled() { return true; }

std::unique_ptr<Communicator> make_mpi_world_communicator() { return std::make_unique<MpiCommunicator>(); }

}  // namespace deepmoe

#else  // no MPI in this build

namespace deepmoe {

bool mpi_compiled() { return false; }

std::unique_ptr<Communicator> make_mpi_world_communicator() {
  throw Error("this deepmoe was built without MPI (install libopenmpi-dev and reconfigure)");
}

}  // namespace deepmoe

#endif
