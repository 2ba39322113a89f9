// The model tools driven through the real `deepmoe` binary: gen-model, inspect (and, with a model library,
// logits / perplexity): outputs, exit codes and error messages.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "model/config.h"
#include "checkpoint/model_summary.h"

namespace {

namespace fs = std::filesystem;

const std::string kTool = DEEPMOE_BINARY_DIR "/tools/deepmoe";

struct RunResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// stderr joins stdout unless with_stderr is false (commands whose stdout is parsed: a warning on stderr, such as
// the random-weights one, is not part of their output).
RunResult run(const std::string& args, bool with_stderr = true) {
  RunResult r;
  FILE* p = ::popen((kTool + " " + args + (with_stderr ? " 2>&1" : " 2>/dev/null")).c_str(), "r");
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

TEST_F(ToolsCli, InspectJson) {
  const RunResult r = run("inspect --json " + model_dir(), /*with_stderr=*/false);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["architecture"], "DeepseekV3ForCausalLM");
  EXPECT_EQ(j["layers"], 2);
  EXPECT_EQ(j["moe_layers"], 1);
  EXPECT_EQ(j["mtp_modules"], 1);
  EXPECT_TRUE(j["missing"].empty());
  EXPECT_TRUE(j["unexpected"].empty());
  const deepmoe::ModelConfig c = deepmoe::load_model_config(model_dir());
  EXPECT_EQ(j["parameters"]["total"].get<int64_t>(), deepmoe::count_parameters(c).total);
  // tiny: latent 128 + rope 32 per layer, 2 layers.
  EXPECT_EQ(j["kv_bytes_per_token"]["absorbed_f32"].get<int64_t>(), 160 * 2 * 4);
  // 3 layers (2 + MTP) × 5 attention projections, 1 dense MLP, 2 MoE layers × (16 experts + shared) × 3.
  int64_t fp8 = 0;
  for (const auto& [pattern, count] : j["fp8_tensors"].items()) fp8 += count.get<int64_t>();
  EXPECT_EQ(fp8, 3 * 5 + 3 + 2 * 17 * 3);
  EXPECT_EQ(j["tensors_by_dtype"]["F8_E4M3"].get<int64_t>(), fp8);
  EXPECT_EQ(j["tensors_by_dtype"]["F32"].get<int64_t>(), fp8 + 2);  // scales + 2 correction biases
  const RunResult text = run("inspect " + model_dir());
  ASSERT_EQ(text.exit_code, 0) << text.output;
  EXPECT_NE(text.output.find("F8_E4M3"), std::string::npos);
  EXPECT_NE(text.output.find("KV cache per token"), std::string::npos);
}

TEST_F(ToolsCli, InspectBadInputs) {
  RunResult r = run("inspect " + (dir_ / "no_such_model").string());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("no_such_model"), std::string::npos) << r.output;
  r = run("inspect --bogus " + model_dir());
  EXPECT_EQ(r.exit_code, 2) << r.output;
}

}  // namespace
