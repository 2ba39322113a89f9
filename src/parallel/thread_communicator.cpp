#include "parallel/thread_communicator.h"

#include <condition_variable>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <thread>

#include "core/error.h"

namespace deepmoe {

// One collective a rank has entered, visible to its peers until every peer has copied its part.
struct Posted {
  const char* op = nullptr;  // operation name; peers must be in the same operation
  const char* send = nullptr;
  std::vector<int64_t> send_bytes, send_offsets;
  int readers_left = 0;
};

struct ThreadHub::State {
  explicit State(int n) : n_ranks(n), posted(static_cast<size_t>(n)) {}
  int n_ranks;
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<std::map<uint64_t, Posted>> posted;  // per rank, by collective sequence number
  bool aborted = false;
  int abort_rank = -1;
  std::string abort_reason;
};

namespace {

std::string rank_list(const std::vector<int>& ranks) {
  std::string s;
  for (int r : ranks) s += (s.empty() ? "" : ", ") + std::to_string(r);
  return s;
}

class ThreadRequest final : public CommRequest {
 public:
  ThreadRequest(ThreadHub::State* state, int rank, uint64_t seq, const char* op, char* recv,
                std::span<const int64_t> recv_bytes, std::span<const int64_t> recv_offsets,
                std::chrono::milliseconds timeout)
      : state_(state), rank_(rank), seq_(seq), op_(op), recv_(recv), recv_bytes_(recv_bytes.begin(), recv_bytes.end()),
        recv_offsets_(recv_offsets.begin(), recv_offsets.end()), received_(size_t(state->n_ranks), false),
        timeout_(timeout) {}

  ~ThreadRequest() override {
    if (done_) return;
    try {
      wait();
    } catch (...) {
      // wait() already withdrew this rank's send buffer; nothing can reach this request's memory now.
    }
  }

  bool test() override {
    std::unique_lock lock(state_->mutex);
    return progress_or_withdraw_locked();
  }

  void wait(CommClock::time_point deadline) override {
    const auto start = CommClock::now();
    std::unique_lock lock(state_->mutex);
    for (;;) {
      if (progress_or_withdraw_locked()) return;
      if (state_->aborted && state_->abort_rank != rank_) {
        withdraw_locked();
        throw Error("rank " + std::to_string(rank_) + ": " + op_ + " #" + std::to_string(seq_) +
                    " abandoned: " + state_->abort_reason);
      }
      if (state_->changed.wait_until(lock, deadline) == std::cv_status::timeout) {
        if (progress_or_withdraw_locked()) return;
        withdraw_locked();
        double seconds = std::chrono::duration<double>(CommClock::now() - start).count();
        throw Error("rank " + std::to_string(rank_) + ": " + op_ + " #" + std::to_string(seq_) + " timed out after " +
                    std::to_string(seconds).substr(0, std::to_string(seconds).find('.') + 2) +
                    " s waiting for rank(s) " + rank_list(missing_locked()) + " (a peer died or stopped answering)");
      }
    }
  }

  void wait() override { wait(CommClock::now() + timeout_); }

 private:
  // On an error (mismatched peer) our send buffer is withdrawn before the error leaves, so that no peer reads it
  // after the caller unwinds.
  bool progress_or_withdraw_locked() {
    try {
      return progress_locked();
    } catch (...) {
      withdraw_locked();
      throw;
    }
  }

  // Copies whatever peers have posted; true once everything arrived and every peer has read our data.
  bool progress_locked() {
    if (done_) return true;
    bool changed = false;
    for (int p = 0; p < state_->n_ranks; ++p) {
      if (received_[size_t(p)]) continue;
      auto& peer = state_->posted[size_t(p)];
      auto it = peer.find(seq_);
      if (it == peer.end()) continue;
      Posted& posted = it->second;
      if (std::strcmp(posted.op, op_) != 0)
        throw Error("rank " + std::to_string(rank_) + ": collective #" + std::to_string(seq_) + " is " + op_ +
                    " here but " + posted.op + " on rank " + std::to_string(p) +
                    " (ranks must issue the same collectives in the same order)");
      int64_t n = posted.send_bytes[size_t(rank_)];
      if (n != recv_bytes_[size_t(p)])
        throw Error("rank " + std::to_string(rank_) + ": " + op_ + " #" + std::to_string(seq_) + ": rank " +
                    std::to_string(p) + " sends " + std::to_string(n) + " bytes but " +
                    std::to_string(recv_bytes_[size_t(p)]) + " are expected");
      if (n > 0) std::memcpy(recv_ + recv_offsets_[size_t(p)], posted.send + posted.send_offsets[size_t(rank_)], size_t(n));
      received_[size_t(p)] = true;
      if (--posted.readers_left == 0) peer.erase(it);
      changed = true;
    }
    if (changed) state_->changed.notify_all();
    for (bool r : received_)
      if (!r) return false;
    // Our own send buffer must stay valid until every peer has read it.
    if (state_->posted[size_t(rank_)].count(seq_) != 0) return false;
    done_ = true;
    return true;
  }

  std::vector<int> missing_locked() const {
    std::vector<int> missing;
    auto mine = state_->posted[size_t(rank_)].find(seq_);
    for (int p = 0; p < state_->n_ranks; ++p)
      if (!received_[size_t(p)] || mine != state_->posted[size_t(rank_)].end()) {
        // A peer is missing when we lack its data or it has not yet read ours (it has not entered the collective).
        bool entered = state_->posted[size_t(p)].count(seq_) != 0 || received_[size_t(p)];
        if (!entered) missing.push_back(p);
      }
    return missing;
  }

  void withdraw_locked() {
    state_->posted[size_t(rank_)].erase(seq_);
    done_ = true;  // nothing of ours is reachable any more; the destructor must not wait again
  }

  ThreadHub::State* state_;
  int rank_;
  uint64_t seq_;
  const char* op_;
  char* recv_;
  std::vector<int64_t> recv_bytes_, recv_offsets_;
  std::vector<bool> received_;
  std::chrono::milliseconds timeout_;
  bool done_ = false;
};

class ThreadCommunicator final : public Communicator {
 public:
  ThreadCommunicator(ThreadHub::State* state, int rank) : state_(state), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return state_->n_ranks; }
  std::string kind() const override { return "threads"; }

  std::unique_ptr<CommRequest> all_to_all_v(const void* send, std::span<const int64_t> send_bytes,
                                            std::span<const int64_t> send_offsets, void* recv,
                                            std::span<const int64_t> recv_bytes,
                                            std::span<const int64_t> recv_offsets) override {
    return start("all_to_all_v", send, send_bytes, send_offsets, recv, recv_bytes, recv_offsets);
  }

  std::vector<int64_t> all_gather(std::span<const int64_t> values) override {
    const size_t n = size_t(size());
    const int64_t bytes = int64_t(values.size() * sizeof(int64_t));
    std::vector<int64_t> out(values.size() * n);
    std::vector<int64_t> counts(n, bytes), send_offsets(n, 0), recv_offsets(n);
    for (size_t p = 0; p < n; ++p) recv_offsets[p] = int64_t(p) * bytes;
    start("all_gather", values.data(), counts, send_offsets, out.data(), counts, recv_offsets)->wait();
    return out;
  }

  void barrier() override {
    const size_t n = size_t(size());
    std::vector<int64_t> zeros(n, 0);
    char dummy = 0;
    start("barrier", &dummy, zeros, zeros, &dummy, zeros, zeros)->wait();
  }

  void abort(const std::string& reason) override {
    std::lock_guard lock(state_->mutex);
    if (!state_->aborted) {
      state_->aborted = true;
      state_->abort_rank = rank_;
      state_->abort_reason = "rank " + std::to_string(rank_) + " failed: " + reason;
    }
    state_->changed.notify_all();
  }

 private:
  std::unique_ptr<CommRequest> start(const char* op, const void* send, std::span<const int64_t> send_bytes,
                                     std::span<const int64_t> send_offsets, void* recv,
                                     std::span<const int64_t> recv_bytes, std::span<const int64_t> recv_offsets) {
    const size_t n = size_t(size());
    DEEPMOE_CHECK(send_bytes.size() == n && send_offsets.size() == n && recv_bytes.size() == n &&
                  recv_offsets.size() == n);
    for (size_t p = 0; p < n; ++p)
      if (send_bytes[p] < 0 || recv_bytes[p] < 0 || send_offsets[p] < 0 || recv_offsets[p] < 0)
        throw Error(std::string(op) + ": negative byte count or offset for rank " + std::to_string(p));
    uint64_t seq = ++seq_;
    {
      std::lock_guard lock(state_->mutex);
      if (state_->aborted && state_->abort_rank != rank_)
        throw Error("rank " + std::to_string(rank_) + ": " + op + " not started: " + state_->abort_reason);
      Posted& posted = state_->posted[size_t(rank_)][seq];
      posted.op = op;
      posted.send = static_cast<const char*>(send);
      posted.send_bytes.assign(send_bytes.begin(), send_bytes.end());
      posted.send_offsets.assign(send_offsets.begin(), send_offsets.end());
      posted.readers_left = int(n);
      state_->changed.notify_all();
    }
    return std::make_unique<ThreadRequest>(state_, rank_, seq, op, static_cast<char*>(recv), recv_bytes, recv_offsets,
                                           timeout_);
  }

  ThreadHub::State* state_;
  int rank_;
  uint64_t seq_ = 0;
};

}  // namespace

ThreadHub::ThreadHub(int n_ranks) {
  if (n_ranks < 1) throw Error("a thread hub needs at least one rank, got " + std::to_string(n_ranks));
  state_ = std::make_unique<State>(n_ranks);
  for (int r = 0; r < n_ranks; ++r) comms_.push_back(std::make_unique<ThreadCommunicator>(state_.get(), r));
}

ThreadHub::~ThreadHub() = default;

int ThreadHub::size() const { return state_->n_ranks; }

Communicator& ThreadHub::communicator(int rank) {
  DEEPMOE_CHECK(rank >= 0 && rank < size(), "rank " + std::to_string(rank));
  return *comms_[size_t(rank)];
}

int ThreadHub::first_failed_rank() const {
  std::lock_guard lock(state_->mutex);
  return state_->abort_rank;
}

void run_thread_ranks(int n_ranks, const std::function<void(Communicator& comm)>& fn) {
  ThreadHub hub(n_ranks);
  std::vector<std::exception_ptr> errors(static_cast<size_t>(n_ranks));
  auto body = [&](int r) {
    Communicator& comm = hub.communicator(r);
    try {
      fn(comm);
    } catch (const std::exception& e) {
      errors[size_t(r)] = std::current_exception();
      comm.abort(e.what());
    } catch (...) {
      errors[size_t(r)] = std::current_exception();
      comm.abort("unknown exception");
    }
  };
  std::vector<std::thread> threads;
  for (int r = 1; r < n_ranks; ++r) threads.emplace_back(body, r);
  body(0);
  for (auto& t : threads) t.join();
  int first = hub.first_failed_rank();
  if (first >= 0 && errors[size_t(first)]) std::rethrow_exception(errors[size_t(first)]);
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace deepmoe
