// The checkpoint generator: exact HF tensor names/shapes/dtypes per preset (expected list computed here from
// the config, independently of model/checkpoint_layout.cpp), the FP8 block-scale layout (dequantized values ≈
// the values drawn), determinism per seed and thread count, sharding, MTP shared copies, tokenizer copy.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/dtype.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "core/thread_pool.h"
#include "checkpoint/checkpoint_generator.h"
#include "checkpoint/checkpoint_layout.h"
#include "model/config.h"
#include "model/safetensors.h"

namespace deepmoe {
namespace {

namespace fs = std::filesystem;

struct Expected {
  std::string dtype;
  std::vector<int64_t> shape;
};

// The tensors of an HF DeepSeek checkpoint, written straight from reference §1.8/§1.9 for this test.
std::map<std::string, Expected> expected_tensors(const ModelConfig& c, bool fp8) {
  std::map<std::string, Expected> m;
  const int64_t H = c.hidden_size, V = c.vocab_size, nh = c.num_attention_heads;
  const std::string lin = fp8 ? "F8_E4M3" : "BF16";
  auto linear = [&](const std::string& name, int64_t out, int64_t in) {
    m[name + ".weight"] = {lin, {out, in}};
    if (fp8) m[name + ".weight_scale_inv"] = {"F32", {(out + 127) / 128, (in + 127) / 128}};
  };
  auto block = [&](int64_t l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    m[p + "input_layernorm.weight"] = {"BF16", {H}};
    m[p + "post_attention_layernorm.weight"] = {"BF16", {H}};
    if (c.q_lora_rank) {
      linear(p + "self_attn.q_a_proj", c.q_lora_rank, H);
      m[p + "self_attn.q_a_layernorm.weight"] = {"BF16", {c.q_lora_rank}};
      linear(p + "self_attn.q_b_proj", nh * (c.qk_nope_head_dim + c.qk_rope_head_dim), c.q_lora_rank);
    } else {
      linear(p + "self_attn.q_proj", nh * (c.qk_nope_head_dim + c.qk_rope_head_dim), H);
    }
    linear(p + "self_attn.kv_a_proj_with_mqa", c.kv_lora_rank + c.qk_rope_head_dim, H);
    m[p + "self_attn.kv_a_layernorm.weight"] = {"BF16", {c.kv_lora_rank}};
    linear(p + "self_attn.kv_b_proj", nh * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank);
    linear(p + "self_attn.o_proj", H, nh * c.v_head_dim);
    const bool moe = l >= c.first_k_dense_replace && l % c.moe_layer_freq == 0;
    if (!moe) {
      for (const char* w : {"gate_proj", "up_proj"}) linear(p + "mlp." + w, c.intermediate_size, H);
      linear(p + "mlp.down_proj", H, c.intermediate_size);
      return;
    }
    m[p + "mlp.gate.weight"] = {"BF16", {c.n_routed_experts, H}};
    if (c.topk_method == "noaux_tc") m[p + "mlp.gate.e_score_correction_bias"] = {"F32", {c.n_routed_experts}};
    for (int64_t e = 0; e < c.n_routed_experts; ++e) {
      const std::string x = p + "mlp.experts." + std::to_string(e) + ".";
      linear(x + "gate_proj", c.moe_intermediate_size, H);
      linear(x + "up_proj", c.moe_intermediate_size, H);
      linear(x + "down_proj", H, c.moe_intermediate_size);
    }
    const int64_t shared = c.n_shared_experts * c.moe_intermediate_size;
    linear(p + "mlp.shared_experts.gate_proj", shared, H);
    linear(p + "mlp.shared_experts.up_proj", shared, H);
    linear(p + "mlp.shared_experts.down_proj", H, shared);
  };
  m["model.embed_tokens.weight"] = {"BF16", {V, H}};
  m["model.norm.weight"] = {"BF16", {H}};
  m["lm_head.weight"] = {"BF16", {V, H}};
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) block(l);
  for (int64_t k = 0; k < c.num_nextn_predict_layers; ++k) {
    const int64_t l = c.num_hidden_layers + k;
    const std::string p = "model.layers." + std::to_string(l) + ".";
    block(l);
    m[p + "embed_tokens.weight"] = {"BF16", {V, H}};
    m[p + "enorm.weight"] = {"BF16", {H}};
    m[p + "hnorm.weight"] = {"BF16", {H}};
    m[p + "eh_proj.weight"] = {"BF16", {H, 2 * H}};
    m[p + "shared_head.norm.weight"] = {"BF16", {H}};
    m[p + "shared_head.head.weight"] = {"BF16", {V, H}};
  }
  return m;
}

// A safetensors file read with a few lines of JSON, independent of the engine's reader.
struct RawFile {
  std::shared_ptr<MappedFile> file;
  nlohmann::json header;
  uint64_t data_offset = 0;
  size_t size() const { return file->size(); }
  const uint8_t* data(const std::string& name) const {
    return file->data() + data_offset + header.at(name).at("data_offsets")[0].get<uint64_t>();
  }
};

RawFile read_raw(const fs::path& path) {
  RawFile f;
  f.file = MappedFile::open(path.string());
  uint64_t n;
  std::memcpy(&n, f.file->data(), 8);
  EXPECT_EQ(n % 8, 0u);
  f.header = nlohmann::json::parse(f.file->data() + 8, f.file->data() + 8 + n);
  f.data_offset = 8 + n;
  return f;
}

bool same_bytes(const fs::path& a, const fs::path& b) {
  const auto fa = MappedFile::open(a.string()), fb = MappedFile::open(b.string());
  return fa->size() == fb->size() && std::memcmp(fa->data(), fb->data(), fa->size()) == 0;
}

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() / ("deepmoe_gen_test_" + std::to_string(::getpid()) + "_" +
                                         std::to_string(counter_++));
    fs::remove_all(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
  static inline int counter_ = 0;
};

// The engine's loader opens the folder and sees exactly the expected tensors.
void expect_loader_sees(const std::string& dir, const std::map<std::string, Expected>& expected) {
  const Checkpoint ckpt = Checkpoint::open(dir);
  const std::vector<std::string> names = ckpt.names();
  EXPECT_EQ(names.size(), expected.size());
  for (const std::string& name : names) {
    auto it = expected.find(name);
    ASSERT_NE(it, expected.end()) << "unexpected tensor " << name;
    const TensorInfo& info = ckpt.info(name);
    EXPECT_EQ(std::string(dtype_name(info.dtype)), it->second.dtype) << name;
    EXPECT_EQ(info.shape, it->second.shape) << name;
  }
}

GeneratorOptions tiny_options() {
  GeneratorOptions o;
  o.preset = "tiny";
  o.seed = 7;
  o.tokenizer_dir = DEEPMOE_ASSETS_DIR "/tokenizer";
  return o;
}

TEST(CheckpointLayout, EveryPresetMatchesTheHfLayout) {
  for (const std::string& preset : checkpoint_preset_names()) {
    for (bool fp8 : {true, false}) {
      ModelConfig c = checkpoint_preset(preset);
      c.num_hidden_layers = std::min<int64_t>(c.num_hidden_layers, 4);
      c.first_k_dense_replace = std::min(c.first_k_dense_replace, c.num_hidden_layers - 1);
      const auto expected = expected_tensors(c, fp8);
      std::map<std::string, Expected> actual;
      for (const TensorSpec& t : checkpoint_layout(c, fp8))
        EXPECT_TRUE(actual.emplace(t.name, Expected{std::string(dtype_name(t.dtype)), t.shape}).second)
            << "duplicate " << t.name;
      ASSERT_EQ(actual.size(), expected.size()) << preset;
      for (const auto& [name, e] : expected) {
        auto it = actual.find(name);
        ASSERT_NE(it, actual.end()) << preset << ": missing " << name;
        EXPECT_EQ(it->second.dtype, e.dtype) << name;
        EXPECT_EQ(it->second.shape, e.shape) << name;
      }
    }
  }
}

TEST(CheckpointGenerator, PresetsHaveOfficialShapes) {
  const ModelConfig lite = checkpoint_preset("v2-lite");
  EXPECT_EQ(lite.arch, ModelArch::DeepseekV2);
  EXPECT_EQ(lite.q_lora_rank, 0);
  EXPECT_EQ(lite.hidden_size, 2048);
  EXPECT_EQ(lite.n_routed_experts, 64);
  EXPECT_EQ(lite.num_experts_per_tok, 6);
  EXPECT_EQ(lite.scoring_func, "softmax");
  EXPECT_FALSE(lite.has_correction_bias());
  const ModelConfig moon = checkpoint_preset("moonlight");
  EXPECT_EQ(moon.arch, ModelArch::DeepseekV3);
  EXPECT_TRUE(moon.has_correction_bias());
  EXPECT_FALSE(moon.rope_scaling.yarn);
  for (const auto& p : checkpoint_preset_names()) EXPECT_EQ(checkpoint_preset(p).vocab_size, 129280) << p;
  // tiny: every FP8 projection has K a multiple of 128 (w8a8 activation tiles).
  for (const TensorSpec& t : checkpoint_layout(checkpoint_preset("tiny"), true))
    if (t.dtype == DType::F8_E4M3) {
      EXPECT_EQ(t.shape[1] % 128, 0) << t.name;
    }
}

TEST(CheckpointGenerator, OptionsAreValidated) {
  GeneratorOptions o = tiny_options();
  o.preset = "nope";
  EXPECT_THROW(generator_config(o), Error);
  o = tiny_options();
  o.layers = 2;
  o.dense_layers = 3;
  EXPECT_THROW(generator_config(o), Error);
  o = tiny_options();
  o.preset = "tiny-v2";
  o.mtp = 1;
  EXPECT_THROW(generator_config(o), Error);
  o = tiny_options();
  o.layers = 3;
  o.dense_layers = 0;
  o.mtp = 0;
  const ModelConfig c = generator_config(o);
  EXPECT_EQ(c.num_hidden_layers, 3);
  EXPECT_EQ(c.first_k_dense_replace, 0);
  EXPECT_EQ(c.num_nextn_predict_layers, 0);
  o = tiny_options();
  o.preset = "v3";
  o.layers = 2;
  EXPECT_EQ(generator_config(o).first_k_dense_replace, 2);  // the preset's 3, capped at --layers
  // --experts: at least the experts per token (tiny: 4 of 16 experts in 4 groups), in whole groups.
  o = tiny_options();
  o.experts = 8;
  EXPECT_EQ(generator_config(o).n_routed_experts, 8);
  o.experts = 6;  // not a multiple of the 4 groups
  EXPECT_THROW(generator_config(o), Error);
  o.experts = generator_config(tiny_options()).num_experts_per_tok - 1;
  EXPECT_THROW(generator_config(o), Error);
}

TEST(CheckpointGenerator, TinyFp8FileHasExactlyTheExpectedTensorsAndScales) {
  TempDir dir;
  ThreadPool pool(2);
  const GeneratorOptions o = tiny_options();
  const GeneratedCheckpoint g = generate_checkpoint(o, dir.str(), &pool);
  const ModelConfig c = load_model_config(dir.str());
  EXPECT_EQ(c, g.config);
  EXPECT_TRUE(c.fp8);
  EXPECT_EQ(c.num_nextn_predict_layers, 1);
  EXPECT_TRUE(same_bytes(dir.path() / "tokenizer.json", DEEPMOE_ASSETS_DIR "/tokenizer/tokenizer.json"));
  EXPECT_TRUE(fs::exists(dir.path() / "tokenizer_config.json"));
  ASSERT_TRUE(fs::exists(dir.path() / "model.safetensors"));
  EXPECT_FALSE(fs::exists(dir.path() / "model.safetensors.index.json"));

  const RawFile f = read_raw(dir.path() / "model.safetensors");
  const auto expected = expected_tensors(c, true);
  expect_loader_sees(dir.str(), expected);
  EXPECT_EQ(f.header.size(), expected.size() + 1);  // + __metadata__
  uint64_t data_bytes = 0;
  for (const auto& [name, e] : expected) {
    ASSERT_TRUE(f.header.contains(name)) << name;
    EXPECT_EQ(f.header[name]["dtype"].get<std::string>(), e.dtype) << name;
    EXPECT_EQ(f.header[name]["shape"].get<std::vector<int64_t>>(), e.shape) << name;
    const auto off = f.header[name]["data_offsets"].get<std::vector<uint64_t>>();
    data_bytes += off[1] - off[0];
  }
  EXPECT_EQ(f.data_offset + data_bytes, f.size());
  EXPECT_EQ(data_bytes, g.tensor_bytes);

  // FP8 block layout: dequantized weight ≈ the drawn values, and every 128×128 block's amax maps to ±448 (a
  // transposed or shifted scale grid breaks both).
  const std::vector<TensorSpec> layout = checkpoint_layout(c, true);
  int checked = 0;
  for (size_t i = 0; i + 1 < layout.size(); ++i) {
    const TensorSpec& w = layout[i];
    if (w.dtype != DType::F8_E4M3) continue;
    if (w.expert > 1) continue;  // two experts per layer are enough
    const int64_t n = w.shape[0], k = w.shape[1], kb = (k + 127) / 128;
    std::vector<float> drawn(size_t(n * k));
    generated_values(w, o.seed, 0, n, drawn.data());
    const uint8_t* q = f.data(w.name);
    std::vector<float> scale(size_t(((n + 127) / 128) * kb));
    std::memcpy(scale.data(), f.data(w.name + "_scale_inv"), scale.size() * 4);
    std::vector<float> block_amax(scale.size(), 0.0f);
    double max_rel_err = 0;
    for (int64_t r = 0; r < n; ++r)
      for (int64_t col = 0; col < k; ++col) {
        const size_t b = size_t((r / 128) * kb + col / 128);
        const float qv = fp8_e4m3_to_f32(q[r * k + col]);
        block_amax[b] = std::max(block_amax[b], std::fabs(qv));
        const float deq = qv * scale[b];
        const float v = drawn[size_t(r * k + col)];
        // e4m3 keeps 3 mantissa bits: half an ulp is 2^-4 relative; subnormals (below 2^-6·s) are 2^-10·s apart.
        const double tol = std::max(std::fabs(double(v)) * 0.0625, double(scale[b]) * std::ldexp(1.0, -10)) + 1e-9;
        EXPECT_LE(std::fabs(double(deq) - v), tol) << w.name << " [" << r << "," << col << "]";
        max_rel_err = std::max(max_rel_err, std::fabs(double(deq) - v) / tol);
      }
    for (float a : block_amax) EXPECT_EQ(a, 448.0f) << w.name;
    ++checked;
  }
  EXPECT_GT(checked, 20);

  // BF16 tensors hold the drawn values rounded; norms are near 1, the correction bias small.
  for (const TensorSpec& t : layout) {
    if (t.role == TensorRole::ScaleInv || t.dtype == DType::F8_E4M3 || t.shared_copy) continue;
    const int64_t rows = t.shape.size() == 2 ? std::min<int64_t>(t.shape[0], 64) : 1;
    const int64_t cols = t.shape.size() == 2 ? t.shape[1] : t.shape[0];
    std::vector<float> drawn(size_t(rows * cols));
    generated_values(t, o.seed, 0, rows, drawn.data());
    for (int64_t i = 0; i < rows * cols; ++i) {
      float stored;
      if (t.dtype == DType::BF16) {
        uint16_t h;
        std::memcpy(&h, f.data(t.name) + 2 * i, 2);
        stored = bf16_to_f32(h);
        ASSERT_EQ(h, f32_to_bf16(drawn[size_t(i)])) << t.name;
      } else {
        std::memcpy(&stored, f.data(t.name) + 4 * i, 4);
        ASSERT_EQ(stored, drawn[size_t(i)]) << t.name;
      }
      if (t.role == TensorRole::Norm) {
        ASSERT_NEAR(stored, 1.0f, 0.3f) << t.name;
      }
      if (t.role == TensorRole::CorrectionBias) {
        ASSERT_LT(std::fabs(stored), 0.3f) << t.name;
      }
    }
  }
  // The MTP module's stored embedding and head are the main model's (shared, README_WEIGHTS.md).
  const size_t emb_bytes = size_t(c.vocab_size * c.hidden_size * 2);
  EXPECT_EQ(std::memcmp(f.data("model.layers.2.embed_tokens.weight"), f.data("model.embed_tokens.weight"), emb_bytes), 0);
  EXPECT_EQ(std::memcmp(f.data("model.layers.2.shared_head.head.weight"), f.data("lm_head.weight"), emb_bytes), 0);
}

TEST(CheckpointGenerator, ValuesAreWellConditioned) {
  // Projections N(0, 1/fan_in): a unit-RMS input gives a unit-RMS output.
  const ModelConfig c = checkpoint_preset("tiny");
  for (const TensorSpec& t : checkpoint_layout(c, true)) {
    if (t.name != "model.layers.0.mlp.gate_proj.weight") continue;
    std::vector<float> v(size_t(t.numel()));
    generated_values(t, 1, 0, t.shape[0], v.data());
    double sum = 0, sq = 0, amax = 0;
    for (float x : v) sum += x, sq += double(x) * x, amax = std::max(amax, std::fabs(double(x)));
    const double n = double(v.size()), mean = sum / n, var = sq / n - mean * mean;
    EXPECT_NEAR(mean, 0.0, 0.005);
    EXPECT_NEAR(var * double(t.fan_in()), 1.0, 0.02);
    EXPECT_LT(amax, 4.5 / std::sqrt(double(t.fan_in())));  // tails stop near 4.3σ
    return;
  }
  FAIL() << "tensor not found";
}

TEST(CheckpointGenerator, DeterministicPerSeedAndThreadCount) {
  TempDir a, b, d;
  ThreadPool one(1), two(2);
  GeneratorOptions o = tiny_options();
  o.tokenizer_dir.clear();
  generate_checkpoint(o, a.str(), &one);
  generate_checkpoint(o, b.str(), &two);
  EXPECT_TRUE(same_bytes(a.path() / "model.safetensors", b.path() / "model.safetensors"));
  EXPECT_FALSE(fs::exists(a.path() / "tokenizer.json"));
  o.seed += 1;
  generate_checkpoint(o, d.str(), &two);
  EXPECT_FALSE(same_bytes(a.path() / "model.safetensors", d.path() / "model.safetensors"));
}

TEST(CheckpointGenerator, Bf16ShardedWithIndex) {
  TempDir dir;
  ThreadPool pool(2);
  GeneratorOptions o = tiny_options();
  o.preset = "tiny-v2";
  o.fp8 = false;
  o.max_shard_bytes = 40u << 20;
  // A stale single-file checkpoint in the folder must not survive next to the shards.
  fs::create_directories(dir.path());
  std::ofstream(dir.path() / "model.safetensors") << "stale";
  const GeneratedCheckpoint g = generate_checkpoint(o, dir.str(), &pool);
  EXPECT_FALSE(fs::exists(dir.path() / "model.safetensors"));
  const ModelConfig c = load_model_config(dir.str());
  EXPECT_FALSE(c.fp8);
  EXPECT_EQ(c.arch, ModelArch::DeepseekV2);
  const auto index = nlohmann::json::parse(read_text_file((dir.path() / "model.safetensors.index.json").string()));
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), g.tensor_bytes);
  const auto expected = expected_tensors(c, false);
  EXPECT_EQ(index["weight_map"].size(), expected.size());
  expect_loader_sees(dir.str(), expected);
  std::map<std::string, RawFile> shards;
  uint64_t total = 0;
  for (const auto& [name, e] : expected) {
    const std::string shard = index["weight_map"].at(name).get<std::string>();
    if (!shards.count(shard)) {
      shards[shard] = read_raw(dir.path() / shard);
      EXPECT_LE(shards[shard].size() - shards[shard].data_offset, std::max<uint64_t>(o.max_shard_bytes, 66191360));
    }
    const auto& h = shards[shard].header.at(name);
    EXPECT_EQ(h["dtype"].get<std::string>(), "BF16") << name;
    EXPECT_EQ(h["shape"].get<std::vector<int64_t>>(), e.shape) << name;
    const auto off = h["data_offsets"].get<std::vector<uint64_t>>();
    total += off[1] - off[0];
  }
  EXPECT_GE(shards.size(), 3u);
  EXPECT_EQ(total, g.tensor_bytes);
  EXPECT_TRUE(shards.begin()->first.starts_with("model-00001-of-0000"));
}

}  // namespace
}  // namespace deepmoe
