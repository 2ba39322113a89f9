// The machine's own limits, measured in the same run as a benchmark so results can be reported as ratios
// (DESIGN.md §7): STREAM-triad memory bandwidth and FP32 FMA peak.
#pragma once

#include <cstddef>

namespace deepmoe {

class ThreadPool;

struct MachineLimits {
  int threads = 1;
  double stream_triad_gbps = 0;   // a[i] = b[i] + s·c[i], 12 bytes per element counted (STREAM convention)
  double fma_peak_gflops = 0;     // FP32, 2 flops per FMA lane, widest ISA available
  const char* isa = "scalar";
};

// pool == nullptr measures one thread. array_bytes is the size of each of the three triad arrays; it must be
// well beyond the last-level cache (default 256 MiB each).
double measure_stream_triad_gbps(ThreadPool* pool, size_t array_bytes = size_t(256) << 20, int repeats = 5);
double measure_fma_peak_gflops(ThreadPool* pool);
MachineLimits measure_machine_limits(ThreadPool* pool);

}  // namespace deepmoe
