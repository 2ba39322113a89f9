// The thread pool that kernels share. parallel_for splits work into fixed contiguous chunks; parallel_for_balanced
// lets idle workers take over the rest of a slow one's share. Kernels keep each output element's reduction order
// independent of the partition, so results depend on neither the thread count nor who ran what (batch
// invariance).
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace deepmoe {

class ThreadPool {
 public:
  // n_threads <= 0 means one per hardware thread. The calling thread is worker 0.
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Runs fn(task, worker) for task in [0, n_tasks); task t runs on worker t % size(). Returns when all are done.
  // If tasks throw, the first exception is rethrown here once every worker has finished (the others' tasks still
  // run). Not reentrant: fn must not call run() on the same pool.
  void run(int64_t n_tasks, const std::function<void(int64_t task, int worker)>& fn);

  // Splits [0, n) into size() contiguous chunks (at least `grain` items each) and runs fn(begin, end).
  void parallel_for(int64_t n, const std::function<void(int64_t begin, int64_t end)>& fn, int64_t grain = 1);

  // Runs fn(item, worker) once for every item in [0, n). Each worker starts on its own contiguous share (as
  // parallel_for splits) and, when that is done, takes items from the front of the others' remaining shares: a
  // worker slowed by the machine (another tenant on its core or its caches) then no longer holds up the whole call.
  // Which worker runs an item varies from run to run, so fn's result must not depend on it; `worker` (< size())
  // only selects per-worker scratch.
  void parallel_for_balanced(int64_t n, const std::function<void(int64_t item, int worker)>& fn);

  static int hardware_threads();

 private:
  void worker_loop(int worker);
  void keep_first_error(std::exception_ptr e);

  int n_threads_;
  std::vector<std::thread> threads_;
  // A job is published by bumping generation_ (release) after job_/job_tasks_ are set; workers that are spinning
  // see it without a system call, sleeping ones are woken through wake_. pending_ counts the workers still busy.
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int64_t, int)>* job_ = nullptr;
  int64_t job_tasks_ = 0;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  bool stop_ = false;
  std::exception_ptr error_;  // the first exception a task of the current job threw (guarded by mutex_)
};

// Runs on `pool` when given, else on the calling thread.
void parallel_for(ThreadPool* pool, int64_t n, const std::function<void(int64_t begin, int64_t end)>& fn,
                  int64_t grain = 1);
void parallel_for_balanced(ThreadPool* pool, int64_t n, const std::function<void(int64_t item, int worker)>& fn);

// The grain for parallel_for over a copy of items of `floats_per_item` floats each: at least 64 KB per task. A
// decode step copies a few KB at a time, and one thread copies that faster than a pool round trip hands half of
// it to another.
inline int64_t copy_grain(int64_t floats_per_item) {
  constexpr int64_t kCopyGrainFloats = int64_t(1) << 14;
  return std::max<int64_t>(1, kCopyGrainFloats / std::max<int64_t>(1, floats_per_item));
}

}  // namespace deepmoe
