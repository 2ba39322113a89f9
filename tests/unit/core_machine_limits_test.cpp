// The measurement itself is not timed here (speed lives in bench/); this checks it runs and reports sane,
// positive numbers with small arrays.
#include <gtest/gtest.h>

#include "core/machine_limits.h"
#include "core/thread_pool.h"

using namespace deepmoe;

TEST(MachineLimits, MeasuresPositiveFiniteNumbers) {
  ThreadPool pool(2);
  double bw = measure_stream_triad_gbps(&pool, size_t(4) << 20, 2);
  EXPECT_GT(bw, 0.0);
  EXPECT_LT(bw, 1e5) << "GB/s beyond any memory system means the timing or byte count is wrong";
  double single = measure_stream_triad_gbps(nullptr, size_t(4) << 20, 2);
  EXPECT_GT(single, 0.0);
}

TEST(MachineLimits, FmaPeakIsPositive) {
  double gflops = measure_fma_peak_gflops(nullptr);
  EXPECT_GT(gflops, 0.0);
  EXPECT_LT(gflops, 1e5);
}

TEST(MachineLimits, ProbeMeasuresAgainOnTheSameArrays) {
  ThreadPool pool(2);
  MachineProbe probe(&pool, size_t(4) << 20);
  EXPECT_EQ(probe.bytes(), size_t(12) << 20);
  for (int i = 0; i < 2; ++i) {  // a second measurement re-runs the triad on arrays holding the first one's result
    const MachineLimits m = probe.measure(2);
    EXPECT_EQ(m.threads, 2);
    EXPECT_GT(m.stream_triad_gbps, 0.0);
    EXPECT_LT(m.stream_triad_gbps, 1e5);
    EXPECT_GT(m.fma_peak_gflops, 0.0);
    EXPECT_LT(m.fma_peak_gflops, 1e5);
  }
}
