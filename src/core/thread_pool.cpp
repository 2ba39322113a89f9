#include "core/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <exception>
#include <thread>
#include <utility>

namespace deepmoe {

int ThreadPool::hardware_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : int(n);
}

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads <= 0 ? hardware_threads() : n_threads) {
  for (int w = 1; w < n_threads_; ++w) threads_.emplace_back([this, w] { worker_loop(w); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : threads_) t.join();
}

namespace {

// How long a thread polls for the next job (or for the workers to finish) before it sleeps. Decode issues tens of
// short GEMV calls per token with little work between them; waking a sleeping thread through the kernel costs
// tens of microseconds on a VM, a large part of a call that streams a few MB. Bounded, so an idle pool sleeps.
constexpr auto kSpin = std::chrono::microseconds(200);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Polls `ready` until it holds or kSpin has passed; true if it holds.
template <typename Ready>
bool spin_until(Ready ready) {
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0;; ++i) {
    if (ready()) return true;
    cpu_relax();
    if ((i & 63) == 63) {
      if (std::chrono::steady_clock::now() - start > kSpin) return ready();
      std::this_thread::yield();  // when more threads than cores are runnable, let the others run
    }
  }
}

}  // namespace

void ThreadPool::worker_loop(int worker) {
  uint64_t seen = 0;
  for (;;) {
    const std::function<void(int64_t, int)>* job;
    int64_t n_tasks;
    if (!spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; })) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || generation_.load(std::memory_order_acquire) != seen; });
      if (stop_) return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stop_) return;
      seen = generation_.load(std::memory_order_acquire);
      job = job_;
      n_tasks = job_tasks_;
    }
    try {
      for (int64_t t = worker; t < n_tasks; t += n_threads_) (*job)(t, worker);
    } catch (...) {
      keep_first_error(std::current_exception());
    }
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mutex_);  // the caller may be between its check and its sleep
      done_.notify_one();
    }
  }
}

void ThreadPool::run(int64_t n_tasks, const std::function<void(int64_t, int)>& fn) {
  if (n_tasks <= 0) return;
  if (n_threads_ == 1 || n_tasks == 1) {
    for (int64_t t = 0; t < n_tasks; ++t) fn(t, 0);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = &fn;
    job_tasks_ = n_tasks;
    pending_.store(n_threads_ - 1, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  try {
    for (int64_t t = 0; t < n_tasks; t += n_threads_) fn(t, 0);
  } catch (...) {
    keep_first_error(std::current_exception());
  }
  // Always wait: the workers use fn and whatever it refers to until they are done, even when a task threw.
  const auto finished = [&] { return pending_.load(std::memory_order_acquire) == 0; };
  if (!spin_until(finished)) {
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, finished);
  }
  std::exception_ptr error;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = nullptr;
    error = std::exchange(error_, nullptr);
  }
  if (error) std::rethrow_exception(error);
}

void ThreadPool::keep_first_error(std::exception_ptr e) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!error_) error_ = std::move(e);
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  if (n <= 0) return;
  int64_t chunks = std::min<int64_t>(n_threads_, std::max<int64_t>(1, n / std::max<int64_t>(grain, 1)));
  run(chunks, [&](int64_t c, int) {
    int64_t begin = n * c / chunks, end = n * (c + 1) / chunks;
    if (begin < end) fn(begin, end);
  });
}

void ThreadPool::parallel_for_balanced(int64_t n, const std::function<void(int64_t, int)>& fn) {
  if (n <= 0) return;
  const int64_t shares = std::min<int64_t>(n_threads_, n);
  if (shares == 1) {  // one worker: nothing to balance, and no share array to allocate (a decode forward of a
    for (int64_t item = 0; item < n; ++item) fn(item, 0);  // small model makes ~60 of these calls)
    return;
  }
  // One cache line per share: the owner's and the thieves' claims on different shares do not contend.
  struct alignas(64) Share {
    std::atomic<int64_t> next;
    int64_t end;
  };
  std::vector<Share> share(static_cast<size_t>(shares));
  for (int64_t c = 0; c < shares; ++c) {
    share[size_t(c)].next.store(n * c / shares, std::memory_order_relaxed);
    share[size_t(c)].end = n * (c + 1) / shares;
  }
  run(shares, [&](int64_t own, int worker) {
    for (int64_t v = 0; v < shares; ++v) {
      Share& s = share[size_t((own + v) % shares)];
      for (int64_t item; (item = s.next.fetch_add(1, std::memory_order_relaxed)) < s.end;) fn(item, worker);
    }
  });
}

void parallel_for_balanced(ThreadPool* pool, int64_t n, const std::function<void(int64_t, int)>& fn) {
  if (pool) return pool->parallel_for_balanced(n, fn);
  for (int64_t item = 0; item < n; ++item) fn(item, 0);
}

void parallel_for(ThreadPool* pool, int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  if (pool) return pool->parallel_for(n, fn, grain);
  if (n > 0) fn(0, n);
}

}  // namespace deepmoe
