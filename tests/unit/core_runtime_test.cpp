// Tensor views, the thread pool's deterministic partitioning, mapped files and error context.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/checked_math.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "core/warning.h"

using namespace deepmoe;

TEST(Tensor, ZerosIsContiguousAlignedAndOwned) {
  Tensor t = Tensor::zeros(DType::F32, {2, 3, 4});
  EXPECT_EQ(t.rank(), 3);
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.nbytes(), 96u);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.strides()[0], 12);
  EXPECT_EQ(t.strides()[2], 1);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % 64, 0u);
  EXPECT_NE(t.owner(), nullptr);
  for (int i = 0; i < 24; ++i) EXPECT_EQ(t.data<float>()[i], 0.0f);
  EXPECT_EQ(t.dim(-1), 4);
  EXPECT_EQ(t.shape_string(), "[2, 3, 4]");
}

TEST(Tensor, ViewReshapeAndSliceShareMemory) {
  float buf[12];
  std::iota(buf, buf + 12, 0.0f);
  Tensor v = Tensor::view(DType::F32, {3, 4}, buf);
  EXPECT_EQ(v.owner(), nullptr);
  Tensor r = v.reshaped({4, 3});
  EXPECT_EQ(r.data<float>()[5], 5.0f);
  Tensor s = v.slice_rows(1, 3);
  EXPECT_EQ(s.dim(0), 2);
  EXPECT_EQ(s.data<float>()[0], 4.0f);
  Tensor empty_rows = v.slice_rows(3, 3);
  EXPECT_EQ(empty_rows.numel(), 0);
}

TEST(Tensor, RefusesImpossibleSizes) {
  EXPECT_THROW(Tensor::zeros(DType::F32, {int64_t(1) << 40, int64_t(1) << 30}), Error);
}

TEST(CheckedMath, DetectsOverflow) {
  EXPECT_FALSE(checked_mul(uint64_t(1) << 33, uint64_t(1) << 31).has_value());
  EXPECT_EQ(checked_mul(6, 7).value(), 42u);
  EXPECT_FALSE(checked_add(~uint64_t(0), 1).has_value());
}

TEST(ThreadPool, RunsEveryTaskOnceOnItsWorker) {
  ThreadPool pool(4);
  std::vector<std::atomic<int>> hits(103);
  std::vector<int> worker_of(103, -1);
  pool.run(103, [&](int64_t t, int w) {
    hits[t]++;
    worker_of[t] = w;
  });
  for (int t = 0; t < 103; ++t) {
    EXPECT_EQ(hits[t].load(), 1);
    EXPECT_EQ(worker_of[t], t % 4) << "fixed assignment: task t runs on worker t % size";
  }
}

TEST(ThreadPool, ParallelForPartitionIsDeterministic) {
  ThreadPool pool(3);
  for (int rep = 0; rep < 20; ++rep) {
    std::mutex m;
    std::set<std::pair<int64_t, int64_t>> chunks;
    pool.parallel_for(1000, [&](int64_t b, int64_t e) {
      std::lock_guard<std::mutex> lock(m);
      chunks.insert({b, e});
    });
    std::set<std::pair<int64_t, int64_t>> expect = {{0, 333}, {333, 666}, {666, 1000}};
    ASSERT_EQ(chunks, expect);
  }
  int64_t total = 0;
  parallel_for(nullptr, 17, [&](int64_t b, int64_t e) { total += e - b; });
  EXPECT_EQ(total, 17);
}

TEST(ThreadPool, ManyShortJobsDoNotDeadlock) {
  ThreadPool pool(2);
  std::atomic<int64_t> sum{0};
  for (int i = 0; i < 2000; ++i) pool.run(3, [&](int64_t t, int) { sum += t; });
  EXPECT_EQ(sum.load(), 2000 * 3);
}

TEST(ThreadPool, BalancedRunsEveryItemOnceWithAValidWorker) {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 2, 5, 1000}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      std::atomic<int> bad_worker{0};
      pool.parallel_for_balanced(n, [&](int64_t item, int worker) {
        hits[size_t(item)]++;
        if (worker < 0 || worker >= threads) bad_worker++;
      });
      for (int64_t i = 0; i < n; ++i) EXPECT_EQ(hits[size_t(i)].load(), 1) << threads << " threads, n " << n;
      EXPECT_EQ(bad_worker.load(), 0);
    }
  }
  int64_t sum = 0;
  parallel_for_balanced(nullptr, 10, [&](int64_t item, int worker) { sum += item + worker; });
  EXPECT_EQ(sum, 45);
}

// Item 0 does not return until every other item has run, which can only happen if the worker that did not take
// item 0 takes over the rest of item 0's share.
TEST(ThreadPool, BalancedLetsAnIdleWorkerTakeOverASlowOnesShare) {
  ThreadPool pool(2);
  const int64_t n = 40;
  std::atomic<int64_t> done{0};
  std::vector<int> worker_of(size_t(n), -1);
  bool others_finished = false;
  pool.parallel_for_balanced(n, [&](int64_t item, int worker) {
    worker_of[size_t(item)] = worker;
    if (item == 0) {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      while (done.load() < n - 1 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
      others_finished = done.load() == n - 1;
    } else {
      done++;
    }
  });
  EXPECT_TRUE(others_finished) << "items of the blocked share were left waiting";
  const int blocked = worker_of[0];
  for (int64_t i = 1; i < n / 2; ++i) EXPECT_EQ(worker_of[size_t(i)], 1 - blocked) << "item " << i;
}

// A task that throws, on the calling thread or on a worker, reaches the caller after every task has finished
// (the workers still use fn's captures until then), and the pool stays usable.
TEST(ThreadPool, ATaskExceptionReachesTheCallerAfterAllTasks) {
  ThreadPool pool(2);
  for (int thrower : {0, 1}) {  // task 0 runs on the caller, task 1 on the worker
    std::atomic<int> ran{0};
    try {
      pool.run(2, [&](int64_t t, int) {
        if (t == thrower) throw std::runtime_error("task failed");
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        ran++;
      });
      ADD_FAILURE() << "no exception from task " << thrower;
    } catch (const std::runtime_error& e) {
      EXPECT_STREQ(e.what(), "task failed");
    }
    EXPECT_EQ(ran.load(), 1) << "the other task finished before run() returned";
  }
  std::atomic<int64_t> sum{0};
  pool.parallel_for_balanced(100, [&](int64_t item, int) { sum += item; });
  EXPECT_EQ(sum.load(), 4950);
}

TEST(MappedFile, MapsContentsAndNamesMissingFiles) {
  std::string path = ::testing::TempDir() + "/deepmoe_mapped_file_test.bin";
  {
    std::ofstream out(path, std::ios::binary);
    out << "hello mmap";
  }
  auto f = MappedFile::open(path);
  ASSERT_EQ(f->size(), 10u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(f->data()), f->size()), "hello mmap");
  EXPECT_EQ(read_text_file(path), "hello mmap");
  try {
    MappedFile::open(path + ".missing");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(".missing"), std::string::npos);
    EXPECT_EQ(e.context().file, path + ".missing");
  }
  EXPECT_THROW(read_text_file(path, 4), Error);
  std::remove(path.c_str());
}

// A folder is named as one (an ifstream took it for a file of 2^63 - 1 bytes); pipes are read to their end.
TEST(ReadTextFile, FoldersAreNamedAndPipesAreRead) {
  const std::string dir = ::testing::TempDir();
  try {
    read_text_file(dir);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "is a directory, not a file");
    EXPECT_EQ(e.context().file, dir);
  }
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  ASSERT_EQ(::write(fds[1], "piped text", 10), 10);
  ::close(fds[1]);
  const std::string path = "/proc/self/fd/" + std::to_string(fds[0]);
  EXPECT_EQ(read_text_file(path), "piped text");
  ::close(fds[0]);
}

TEST(Warnings, EachKeyIsReportedOnceThroughTheHandler) {
  reset_warnings();
  std::vector<std::string> seen;
  const WarningHandler previous = set_warning_handler([&](std::string_view m) { seen.emplace_back(m); });
  EXPECT_TRUE(warn_once("a", "first a"));
  EXPECT_FALSE(warn_once("a", "second a"));
  EXPECT_TRUE(warn_once("b", "first b"));
  set_warning_handler(previous);
  reset_warnings();
  EXPECT_EQ(seen, (std::vector<std::string>{"first a", "first b"}));
}

TEST(Error, CarriesContextInItsMessage) {
  Error e = Error("bad shape").with_tensor("model.norm.weight").with_file("model.safetensors");
  EXPECT_STREQ(e.what(), "model.safetensors: tensor 'model.norm.weight': bad shape");
  EXPECT_EQ(e.message(), "bad shape");
  Error f = Error("must be positive", {.field = "num_hidden_layers"}).with_file("config.json");
  EXPECT_STREQ(f.what(), "config.json: field 'num_hidden_layers': must be positive");
}

TEST(ErrorDeathTest, InvariantAbortsWithFileAndLine) {
  EXPECT_DEATH(DEEPMOE_CHECK(1 + 1 == 3, "arithmetic"), "core_runtime_test.cpp:[0-9]+: check failed: 1 \\+ 1 == 3: arithmetic");
}
