#include "parallel/chrome_trace.h"

#include <cstdio>

#include "core/error.h"

namespace deepmoe {
namespace {

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

void TraceRecorder::add(const std::string& name, TraceLane lane, int micro_batch, CommClock::time_point start,
                        CommClock::time_point end) {
  const double ts = std::chrono::duration<double, std::micro>(start - origin_).count();
  const double dur = std::chrono::duration<double, std::micro>(end - start).count();
  std::lock_guard lock(mutex_);
  spans_.push_back({name, lane, micro_batch, ts, dur});
}

std::string TraceRecorder::events_json() const {
  std::lock_guard lock(mutex_);
  std::string out;
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,\"args\":{\"name\":\"rank %d\"}},"
                "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":0,\"args\":{\"name\":\"compute\"}},"
                "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":1,\"args\":{\"name\":\"comm\"}}",
                rank_, rank_, rank_, rank_);
  out += buf;
  for (const Span& s : spans_) {
    std::snprintf(buf, sizeof buf,
                  ",{\"name\":\"%s\",\"cat\":\"%s\",\"ph\":\"X\",\"ts\":%.3f,\"dur\":%.3f,\"pid\":%d,\"tid\":%d,"
                  "\"args\":{\"micro_batch\":%d}}",
                  json_escape(s.name).c_str(), s.lane == TraceLane::Compute ? "compute" : "comm", s.ts_us, s.dur_us,
                  rank_, int(s.lane), s.micro_batch);
    out += buf;
  }
  return out;
}

double TraceRecorder::total_us(TraceLane lane, const std::string& prefix) const {
  std::lock_guard lock(mutex_);
  double total = 0;
  for (const Span& s : spans_)
    if (s.lane == lane && s.name.compare(0, prefix.size(), prefix) == 0) total += s.dur_us;
  return total;
}

void TraceRecorder::clear() {
  std::lock_guard lock(mutex_);
  spans_.clear();
}

double TraceRecorder::lane_total_us(TraceLane lane) const {
  std::lock_guard lock(mutex_);
  double total = 0;
  for (const Span& s : spans_)
    if (s.lane == lane) total += s.dur_us;
  return total;
}

void write_chrome_trace(Communicator& comm, const TraceRecorder& recorder, const std::string& path) {
  const std::string mine = recorder.events_json();
  const int R = comm.size();
  const std::vector<int64_t> sizes = comm.all_gather(std::vector<int64_t>{int64_t(mine.size())});
  std::vector<int64_t> send_bytes(static_cast<size_t>(R), 0), send_offsets(static_cast<size_t>(R), 0);
  std::vector<int64_t> recv_bytes(static_cast<size_t>(R), 0), recv_offsets(static_cast<size_t>(R), 0);
  send_bytes[0] = int64_t(mine.size());
  int64_t total = 0;
  if (comm.rank() == 0)
    for (int r = 0; r < R; ++r) {
      recv_bytes[size_t(r)] = sizes[size_t(r)];
      recv_offsets[size_t(r)] = total;
      total += sizes[size_t(r)];
    }
  std::string all(static_cast<size_t>(total), '\0');
  comm.all_to_all_v(mine.data(), send_bytes, send_offsets, all.data(), recv_bytes, recv_offsets)->wait();
  if (comm.rank() != 0) return;
  FILE* f = std::fopen(path.c_str(), "w");
  if (!f) throw Error("cannot write the trace file", ErrorContext{path, "", ""});
  std::fputs("{\"traceEvents\":[", f);
  for (int r = 0; r < R; ++r) {
    if (r) std::fputc(',', f);
    std::fwrite(all.data() + recv_offsets[size_t(r)], 1, size_t(recv_bytes[size_t(r)]), f);
  }
  std::fputs("],\"displayTimeUnit\":\"ms\"}\n", f);
  if (std::fclose(f) != 0) throw Error("cannot write the trace file", ErrorContext{path, "", ""});
}

}  // namespace deepmoe
