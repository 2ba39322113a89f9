// The machine's own limits, measured in the same run as a benchmark so results can be reported as ratios
// (DESIGN.md §7): STREAM-triad memory bandwidth and FP32 FMA peak.
#pragma once

#include <cstddef>
#include <memory>

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
// All threads' FMA work over one shared window of time: a core slowed by other work lowers only its own share.
double measure_fma_peak_gflops(ThreadPool* pool);
MachineLimits measure_machine_limits(ThreadPool* pool);

// Measures the machine again and again on the same triad arrays, allocated and first touched once. A benchmark
// creates it before loading a checkpoint and re-measures right before each case: arrays allocated after the
// weights fill memory come from scattered pages and read up to 40% low, and the machine's speed drifts within a
// run, so each case is best compared with a measurement taken just before it.
class MachineProbe {
 public:
  explicit MachineProbe(ThreadPool* pool, size_t array_bytes = size_t(256) << 20);
  MachineProbe(const MachineProbe&) = delete;
  MachineProbe& operator=(const MachineProbe&) = delete;

  MachineLimits measure(int repeats = 5);  // triad (best of `repeats`) and FMA peak
  double stream_triad_gbps(int repeats = 5);
  size_t bytes() const { return 3 * n_ * sizeof(float); }  // resident while the probe lives

 private:
  struct Free {
    void operator()(float* p) const;
  };
  using Array = std::unique_ptr<float, Free>;

  ThreadPool* pool_;
  size_t n_;
  Array a_, b_, c_;
};

}  // namespace deepmoe
