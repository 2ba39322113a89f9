// Chrome-trace output: every rank's spans gathered on rank 0 into one valid Trace Event Format file.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/mapped_file.h"
#include "parallel/chrome_trace.h"
#include "parallel/thread_communicator.h"

namespace deepmoe {
namespace {

TEST(ChromeTrace, GathersAllRanksIntoOneFile) {
  const std::string path = ::testing::TempDir() + "deepmoe_trace_test.json";
  run_thread_ranks(3, [&](Communicator& comm) {
    const auto origin = CommClock::now();
    TraceRecorder rec(comm.rank(), origin);
    rec.add("ATTN \"l0\"", TraceLane::Compute, 0, origin, origin + std::chrono::microseconds(250));
    rec.add("DISPATCH l0", TraceLane::Comm, 1, origin + std::chrono::microseconds(100),
            origin + std::chrono::microseconds(400));
    EXPECT_DOUBLE_EQ(rec.lane_total_us(TraceLane::Comm), 300.0);
    write_chrome_trace(comm, rec, path);
  });
  auto j = nlohmann::json::parse(read_text_file(path));
  const auto& ev = j.at("traceEvents");
  int spans = 0, meta = 0;
  std::set<int> pids;
  for (const auto& e : ev) {
    if (e["ph"] == "X") {
      ++spans;
      pids.insert(e["pid"].get<int>());
      if (e["tid"] == 1) {
        EXPECT_EQ(e["name"], "DISPATCH l0");
        EXPECT_EQ(e["cat"], "comm");
        EXPECT_DOUBLE_EQ(e["ts"].get<double>(), 100.0);
        EXPECT_DOUBLE_EQ(e["dur"].get<double>(), 300.0);
        EXPECT_EQ(e["args"]["micro_batch"], 1);
      } else {
        EXPECT_EQ(e["name"], "ATTN \"l0\"");  // escaped and parsed back
      }
    } else {
      ++meta;
    }
  }
  EXPECT_EQ(spans, 6);
  EXPECT_EQ(meta, 9);
  EXPECT_EQ(pids, (std::set<int>{0, 1, 2}));
}

}  // namespace
}  // namespace deepmoe
