// Chrome-trace JSON (the Trace Event Format that Perfetto and chrome://tracing open) of compute and communication
// spans per rank and micro-batch, for `--trace FILE` (the two-micro-batch overlap must be visible).
// Each rank is a process (pid = rank) with two lanes: tid 0 "compute" and tid 1 "comm".
#pragma once

#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "parallel/communicator.h"

namespace deepmoe {

enum class TraceLane : int { Compute = 0, Comm = 1 };

class TraceRecorder {
 public:
  // Times are microseconds since `origin` (take it right after a barrier so that ranks line up).
  TraceRecorder(int rank, CommClock::time_point origin) : rank_(rank), origin_(origin) {}

  void add(const std::string& name, TraceLane lane, int micro_batch, CommClock::time_point start,
           CommClock::time_point end);

  // Records the span from construction to destruction.
  class Scope {
   public:
    // Without a recorder (the usual case) a scope does nothing: no clock read and no copy of the name — a decode
    // forward of a small model opens ~30 of them.
    Scope(TraceRecorder* rec, std::string_view name, TraceLane lane, int micro_batch)
        : rec_(rec), name_(rec ? std::string(name) : std::string()), lane_(lane), mb_(micro_batch) {
      if (rec_) start_ = CommClock::now();
    }
    ~Scope() {
      if (rec_) rec_->add(name_, lane_, mb_, start_, CommClock::now());
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    TraceRecorder* rec_;
    std::string name_;
    TraceLane lane_;
    int mb_;
    CommClock::time_point start_;
  };

  // This rank's events as JSON objects separated by commas (lane names included).
  std::string events_json() const;
  // Total duration of the recorded spans on a lane, in microseconds.
  double lane_total_us(TraceLane lane) const;
  // Total duration of the spans on a lane whose name starts with `prefix`, in microseconds.
  double total_us(TraceLane lane, const std::string& prefix) const;
  void clear();

 private:
  struct Span {
    std::string name;
    TraceLane lane;
    int micro_batch;
    double ts_us, dur_us;
  };
  int rank_;
  CommClock::time_point origin_;
  mutable std::mutex mutex_;
  std::vector<Span> spans_;
};

// Collective: gathers every rank's events on rank 0, which writes {"traceEvents": [...]} to `path`. Throws Error
// (on rank 0) when the file cannot be written.
void write_chrome_trace(Communicator& comm, const TraceRecorder& recorder, const std::string& path);

}  // namespace deepmoe
