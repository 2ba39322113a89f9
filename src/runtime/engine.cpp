#include "runtime/engine.h"

#include <array>
#include <chrono>
#include <exception>

#include "core/error.h"
#include "parallel/communicator.h"
#include "parallel/leader_broadcast.h"

namespace deepmoe {
namespace {

// A step plan message: the step, and room for arguments that later steps may need.
constexpr size_t kPlanValues = 4;

// A follower waits for the next step as long as the leader waits for its input (a chat user, a server's next
// request); a leader that dies ends the job through the launcher.
CommClock::time_point follower_deadline() { return CommClock::now() + std::chrono::hours(24 * 365); }

}  // namespace

std::unique_ptr<Engine> Engine::open(const std::string& dir, const ExecutorOptions& options, Communicator& comm) {
  return std::unique_ptr<Engine>(new Engine(Executor::load(dir, options, comm), comm));
}

std::unique_ptr<Engine> Engine::open(const std::string& dir, const ExecutorOptions& options) {
  auto comm = std::make_unique<SingleRankCommunicator>();
  auto engine = open(dir, options, *comm);
  engine->own_comm_ = std::move(comm);
  return engine;
}

Engine::Engine(std::unique_ptr<Executor> executor, Communicator& comm)
    : executor_(std::move(executor)), comm_(comm) {}

Engine::~Engine() {
  if (!is_leader() || finished_) return;
  try {
    finish();
  } catch (const std::exception&) {
    // The followers are gone already (the job is ending); nothing more to tell them.
  }
}

bool Engine::is_leader() const { return comm_.rank() == 0; }
int Engine::ranks() const { return comm_.size(); }
const ModelConfig& Engine::config() const { return executor_->config(); }
const ExecutorOptions& Engine::options() const { return executor_->options(); }
bool Engine::has_mtp() const { return executor_->has_mtp(); }
uint64_t Engine::weight_bytes() const { return executor_->weight_bytes(); }

std::unique_ptr<Sequence> Engine::create_sequence() const { return executor_->create_sequence(); }
KvPools Engine::create_kv_pools(uint64_t budget_bytes, int64_t block_tokens) const {
  return executor_->create_kv_pools(budget_bytes, block_tokens);
}
std::unique_ptr<Sequence> Engine::create_sequence(const KvPools& pools, std::span<const int32_t> prompt) const {
  return executor_->create_sequence(pools, prompt);
}

void Engine::require_leader(const char* what) const {
  if (!is_leader()) throw Error(std::string("engine: ") + what + " is the leader's (rank 0) call; other ranks follow()");
  if (finished_) throw Error(std::string("engine: ") + what + " after finish()");
}

void Engine::announce(Step step) {
  if (comm_.size() == 1) return;
  const std::array<int64_t, kPlanValues> plan{int64_t(step), 0, 0, 0};
  broadcast_from_leader(comm_, plan, kPlanValues, comm_.deadline_from_now());
}

template <class Body>
auto Engine::run_step(Step step, Body&& body) {
  bool announced = false;
  try {
    return body([&] {
      announce(step);
      announced = true;
    });
  } catch (const std::exception& e) {
    // The followers are inside the step's collectives: they cannot be brought back to a clean state.
    if (announced && comm_.size() > 1) comm_.abort(std::string("the leader failed inside a step: ") + e.what());
    throw;
  }
}

Tensor Engine::forward(const std::vector<SequenceInput>& batch, Tensor* hidden) {
  require_leader("forward");
  return run_step(Step::Forward, [&](auto&& announce_step) { return executor_->forward(batch, hidden, announce_step); });
}

Tensor Engine::forward_mtp(const std::vector<MtpInput>& batch, Tensor* hidden) {
  require_leader("forward_mtp");
  return run_step(Step::ForwardMtp,
                  [&](auto&& announce_step) { return executor_->forward_mtp(batch, hidden, announce_step); });
}

void Engine::rebalance() {
  require_leader("rebalance");
  run_step(Step::Rebalance, [&](auto&& announce_step) {
    announce_step();
    executor_->rebalance();
    return 0;
  });
}

void Engine::finish() {
  if (!is_leader() || finished_) return;
  finished_ = true;
  announce(Step::Finish);
}

void Engine::follow() {
  if (is_leader()) throw Error("engine: follow() is for the ranks other than 0");
  for (;;) {
    const std::vector<int64_t> plan =
        broadcast_from_leader(comm_, {}, kPlanValues, follower_deadline(), BroadcastWait::Patient);
    switch (Step(plan[0])) {
      case Step::Forward:
        executor_->forward({});
        break;
      case Step::ForwardMtp:
        executor_->forward_mtp({});
        break;
      case Step::Rebalance:
        executor_->rebalance();
        break;
      case Step::Finish:
        return;
      default:
        throw Error("engine: unknown step " + std::to_string(plan[0]) + " from the leader");
    }
  }
}

}  // namespace deepmoe
