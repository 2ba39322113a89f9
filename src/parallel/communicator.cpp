#include "parallel/communicator.h"

#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "parallel/mpi_communicator.h"

namespace deepmoe {

std::chrono::milliseconds comm_timeout_from_env() {
  const char* s = std::getenv("DEEPMOE_COMM_TIMEOUT_S");
  if (s == nullptr || *s == '\0') return kDefaultCommTimeout;
  char* end = nullptr;
  double seconds = std::strtod(s, &end);
  if (end == s || *end != '\0' || !(seconds > 0) || seconds > 86400)
    throw Error(std::string("DEEPMOE_COMM_TIMEOUT_S must be a number of seconds in (0, 86400], got '") + s + "'");
  return std::chrono::milliseconds(int64_t(seconds * 1000.0 + 0.5));
}

namespace {

class CompletedRequest final : public CommRequest {
 public:
  bool test() override { return true; }
  void wait(CommClock::time_point) override {}
  void wait() override {}
};

}  // namespace

std::unique_ptr<CommRequest> SingleRankCommunicator::all_to_all_v(const void* send,
                                                                  std::span<const int64_t> send_bytes,
                                                                  std::span<const int64_t> send_offsets,
                                                                  void* recv, std::span<const int64_t> recv_bytes,
                                                                  std::span<const int64_t> recv_offsets) {
  DEEPMOE_CHECK(send_bytes.size() == 1 && send_offsets.size() == 1 && recv_bytes.size() == 1 &&
                recv_offsets.size() == 1);
  if (send_bytes[0] != recv_bytes[0])
    throw Error("all_to_all_v: rank 0 sends " + std::to_string(send_bytes[0]) + " bytes to itself but expects " +
                std::to_string(recv_bytes[0]));
  if (send_bytes[0] > 0)
    std::memmove(static_cast<char*>(recv) + recv_offsets[0], static_cast<const char*>(send) + send_offsets[0],
                 size_t(send_bytes[0]));
  return std::make_unique<CompletedRequest>();
}

std::vector<int64_t> SingleRankCommunicator::all_gather(std::span<const int64_t> values) {
  return {values.begin(), values.end()};
}

void SingleRankCommunicator::abort(const std::string& reason) {
  // Nothing else to stop: the caller's error propagates normally.
  (void)reason;
}

bool launched_by_mpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(var) != nullptr) return true;
  return false;
}

std::unique_ptr<Communicator> make_world_communicator() {
  if (mpi_compiled() && launched_by_mpi()) return make_mpi_world_communicator();
  return std::make_unique<SingleRankCommunicator>();
}

}  // namespace deepmoe
