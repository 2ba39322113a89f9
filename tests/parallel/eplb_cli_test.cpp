// `deepmoe eplb FILE` end to end: the README example's placement and loads, and bad files rejected by name.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace {

struct ToolRun {
  int status;
  std::string out;
};

ToolRun run(const std::string& args) {
  std::string cmd = std::string(DEEPMOE_BINARY_DIR) + "/tools/deepmoe eplb " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

TEST(EplbCommand, ReadmeExample) {
  ToolRun r = run(std::string(DEEPMOE_TEST_DATA_DIR) + "/eplb/readme_example.json");
  ASSERT_EQ(r.status, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["policy"], "hierarchical");
  EXPECT_EQ(j["phy2log"], nlohmann::json::parse("[[5,6,5,7,8,4,3,4,10,9,10,2,0,1,11,1],"
                                                "[7,10,6,8,6,11,8,9,2,4,5,1,5,0,3,1]]"));
  EXPECT_EQ(j["logcnt"], nlohmann::json::parse("[[1,2,1,1,2,2,1,1,1,1,2,1],[1,2,1,1,1,2,2,1,2,1,1,1]]"));
  EXPECT_EQ(j["log2phy"][1][8], nlohmann::json::parse("[6,3]"));
  EXPECT_EQ(j["gpu_load_after"][0], nlohmann::json::parse("[121.5,86.5,125,113,147.5,131.5,156,152]"));
  EXPECT_EQ(j["gpu_load_after"][1], nlohmann::json::parse("[173,179.5,120.5,172,123,152,118.5,117.5]"));
  // Without EPLB, 12 experts over 8 GPUs: e on ⌊e·8/12⌋ → layer 0 GPU 0 holds experts 0 and 1.
  EXPECT_EQ(j["gpu_load_before"][0][0], 222.0);
}

TEST(EplbCommand, BadFilesAreNamedErrors) {
  const std::string dir = ::testing::TempDir();
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir + name) << text;
    return dir + name;
  };
  ToolRun r = run(write("eplb_bad1.json", "{\"weight\": [[1, 2]], \"num_replicas\": 3, \"num_groups\": 1, "
                                      "\"num_nodes\": 1, \"num_gpus\": 2}"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("num_replicas"), std::string::npos) << r.out;
  r = run(write("eplb_bad2.json", "{\"weight\": [[1, \"x\"]], \"num_replicas\": 2, \"num_groups\": 1, "
                                  "\"num_nodes\": 1, \"num_gpus\": 1}"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("weight"), std::string::npos) << r.out;
  r = run(write("eplb_bad3.json", "{\"weight\": [[1, 2]]}"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("missing"), std::string::npos) << r.out;
  r = run(write("eplb_bad4.json", "{\"weight\": [[1, 2]"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("not valid JSON"), std::string::npos) << r.out;
  r = run(dir + "does_not_exist.json");
  EXPECT_EQ(r.status, 1);
}

}  // namespace
