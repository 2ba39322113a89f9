// Loading: bad checkpoints give errors naming the tensor and the expected vs actual shape; bad requests are
// errors; FP8 weights are used in place (peak RSS of loading stays under 1.15 × the file size).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <cstring>
#include <string>

#include <unistd.h>

#include "core/error.h"
#include "model/config.h"
#include "runtime/executor.h"
#include "model/safetensors.h"
#include "checkpoint/safetensors_writer.h"
#include "tiny_checkpoint.h"

namespace deepmoe {
namespace {

using namespace testing_util;

// Rewrites dir's model.safetensors through `edit(name, tensor) -> keep?` (tensors may be replaced).
template <typename Edit>
void rewrite_checkpoint(const std::string& src, const std::string& dst, Edit edit) {
  std::filesystem::create_directories(dst);
  std::filesystem::copy_file(src + "/config.json", dst + "/config.json",
                             std::filesystem::copy_options::overwrite_existing);
  Checkpoint ck = Checkpoint::open(src);
  SafetensorsWriter w;
  for (const std::string& name : ck.names()) {
    Tensor t = ck.get(name);
    if (edit(name, t)) w.add(name, t);
  }
  w.write(dst + "/model.safetensors");
}

std::string error_of(const std::string& dir) {
  try {
    Executor::load(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

const std::string& tiny_dir() {
  static const std::string dir = [] {
    std::string d = temp_dir("loading") + "/v3";
    write_tiny_checkpoint(tiny_v3_config(), d, WeightFormat::Fp8, 5);
    return d;
  }();
  return dir;
}

TEST(ModelLoading, MissingTensorIsNamed) {
  const std::string dst = temp_dir("missing");
  rewrite_checkpoint(tiny_dir(), dst, [](const std::string& n, Tensor&) {
    return n != "model.layers.1.mlp.experts.3.up_proj.weight";
  });
  std::string msg = error_of(dst);
  EXPECT_NE(msg.find("model.layers.1.mlp.experts.3.up_proj.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[128, 256]"), std::string::npos) << msg;  // the expected shape
}

TEST(ModelLoading, WrongShapeNamesExpectedAndActual) {
  const std::string dst = temp_dir("shape");
  rewrite_checkpoint(tiny_dir(), dst, [](const std::string& n, Tensor& t) {
    if (n == "model.layers.0.self_attn.kv_a_layernorm.weight") t = Tensor::zeros(DType::BF16, {100});
    return true;
  });
  std::string msg = error_of(dst);
  EXPECT_NE(msg.find("model.layers.0.self_attn.kv_a_layernorm.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[100]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[128]"), std::string::npos) << msg;
}

TEST(ModelLoading, MissingScaleInvIsNamed) {
  const std::string dst = temp_dir("scale");
  rewrite_checkpoint(tiny_dir(), dst, [](const std::string& n, Tensor&) {
    return n != "model.layers.0.self_attn.o_proj.weight_scale_inv";
  });
  std::string msg = error_of(dst);
  EXPECT_NE(msg.find("model.layers.0.self_attn.o_proj.weight_scale_inv"), std::string::npos) << msg;
}

TEST(ModelLoading, BadRequestsAreErrors) {
  auto model = Executor::load(tiny_dir());
  auto s = model->create_sequence();
  EXPECT_THROW(model->forward({SequenceInput::last(s.get(), {0, 512})}), Error);  // vocab is 512
  EXPECT_THROW(model->forward({SequenceInput::last(s.get(), {-1})}), Error);
  EXPECT_THROW(model->forward({SequenceInput{s.get(), {1, 2}, {2}}}), Error);  // index past the tokens
  EXPECT_THROW(model->forward({SequenceInput::last(s.get(), {1}), SequenceInput::last(s.get(), {2})}), Error);
  EXPECT_EQ(s->length(), 0);  // nothing was appended by the failed calls
  ExecutorOptions bad;
  bad.kv_dtype = DType::F16;
  EXPECT_THROW(Executor::load(tiny_dir(), bad), Error);
}

int64_t status_kib(const char* field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(field, 0) == 0) return std::atoll(line.c_str() + std::strlen(field));
  return -1;
}

// Runs in a fresh process (re-executed by the test below) so the peak RSS is the load's own.
TEST(ModelLoading, RssChildProcess) {
  const char* dir = std::getenv("DEEPMOE_RSS_CHILD_DIR");
  if (!dir) GTEST_SKIP() << "only run as the child of PeakRssOfLoadingStaysNearFileSize";
  const int64_t before = status_kib("VmRSS:");
  auto model = Executor::load(dir);
  const int64_t peak = status_kib("VmHWM:");
  std::printf("RSS_KIB before=%lld peak=%lld\n", (long long)before, (long long)peak);
}

TEST(ModelLoading, PeakRssOfLoadingStaysNearFileSize) {
  // A model dominated by FP8 expert weights: 64 experts × 3 projections per MoE layer.
  ModelConfig c = tiny_v3_config();
  c.n_routed_experts = 64;
  c.num_hidden_layers = 4;
  c.moe_intermediate_size = 256;
  const std::string dir = temp_dir("rss") + "/model";
  const uint64_t file_bytes = write_tiny_checkpoint(c, dir, WeightFormat::Fp8, 9);
  const std::string cmd = "DEEPMOE_RSS_CHILD_DIR=" + dir +
                          " /proc/" + std::to_string(::getpid()) +
                          "/exe --gtest_filter=ModelLoading.RssChildProcess 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  long long before = -1, peak = -1;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p)) std::sscanf(buf, "RSS_KIB before=%lld peak=%lld", &before, &peak);
  ASSERT_EQ(::pclose(p), 0);
  ASSERT_GT(peak, 0);
  const double grown = double(peak - before) * 1024.0;
  std::printf("file %.1f MiB, RSS before load %.1f MiB, peak %.1f MiB, growth %.2f x file\n", file_bytes / 1048576.0,
              before / 1024.0, peak / 1024.0, grown / double(file_bytes));
  // Growth of the peak over the process baseline (the test binary's own pages) while loading.
  EXPECT_LT(grown, 1.15 * double(file_bytes));
  EXPECT_LT(double(peak) * 1024.0, 1.15 * double(file_bytes) + double(before) * 1024.0);
}

}  // namespace
}  // namespace deepmoe
