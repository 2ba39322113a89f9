// The model tools driven through the real `deepmoe` binary: gen-model, inspect (and, with a model library,
// logits / perplexity): outputs, exit codes and error messages.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

namespace {

namespace fs = std::filesystem;

const std::string kTool = DEEPMOE_BINARY_DIR "/tools/deepmoe";

struct RunResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

RunResult run(const std::string& args) {
  RunResult r;
  FILE* p = ::popen((kTool + " " + args + " 2>&1").c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  const int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

class ToolsCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("deepmoe_tools_cli_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    const RunResult r = run("gen-model --preset tiny --seed 3 --out " + model_dir());
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static std::string model_dir() { return (dir_ / "tiny").string(); }
  static inline fs::path dir_;
};

TEST_F(ToolsCli, GenModelWritesTheFolder) {
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"})
    EXPECT_TRUE(fs::exists(fs::path(model_dir()) / f)) << f;
}

TEST_F(ToolsCli, GenModelSameSeedSameBytes) {
  const std::string other = (dir_ / "tiny_again").string();
  const RunResult r = run("gen-model --preset tiny --seed 3 --threads 1 --tokenizer '' --out " + other);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream a(fs::path(model_dir()) / "model.safetensors", std::ios::binary),
      b(fs::path(other) / "model.safetensors", std::ios::binary);
  EXPECT_TRUE(std::equal(std::istreambuf_iterator<char>(a), {}, std::istreambuf_iterator<char>(b)));
  EXPECT_FALSE(fs::exists(fs::path(other) / "tokenizer.json"));
}

TEST_F(ToolsCli, GenModelBadInputs) {
  RunResult r = run("gen-model --preset huge --out " + (dir_ / "x").string());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("unknown checkpoint preset 'huge'"), std::string::npos) << r.output;
  r = run("gen-model --preset tiny");  // --out is required
  EXPECT_EQ(r.exit_code, 2) << r.output;
  r = run("gen-model --preset tiny --dtype fp4 --out " + (dir_ / "x").string());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  r = run("gen-model --preset tiny --mtp --no-mtp --out " + (dir_ / "x").string());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  r = run("gen-model --preset tiny-v2 --mtp --out " + (dir_ / "x").string());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("MTP"), std::string::npos) << r.output;
  r = run("gen-model --preset tiny --layers 2 --dense-layers 5 --out " + (dir_ / "x").string());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("--dense-layers"), std::string::npos) << r.output;
  r = run("gen-model --preset tiny --out /proc/deepmoe_cannot_write_here");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("/proc/deepmoe_cannot_write_here"), std::string::npos) << r.output;
}

}  // namespace
