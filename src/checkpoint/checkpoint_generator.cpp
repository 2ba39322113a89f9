#include "checkpoint/checkpoint_generator.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "core/thread_pool.h"
#include "kernels/quantize.h"
#include "model/safetensors.h"

namespace deepmoe {
namespace {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------------------------
// Presets. Dimensions follow the official config.json files (DeepSeek-V3 §1.1; DeepSeek-V2-Lite; Moonlight-16B-A3B)
// except vocab_size, which is the DeepSeek-V3 tokenizer's 129280 everywhere so generated models run real text.

constexpr int64_t kTokenizerVocab = 129280;

ModelConfig v3_preset() {
  ModelConfig c;
  c.arch = ModelArch::DeepseekV3;
  c.vocab_size = kTokenizerVocab;
  c.hidden_size = 7168;
  c.intermediate_size = 18432;
  c.moe_intermediate_size = 2048;
  c.num_hidden_layers = 61;
  c.num_nextn_predict_layers = 1;
  c.num_attention_heads = 128;
  c.q_lora_rank = 1536;
  c.kv_lora_rank = 512;
  c.qk_nope_head_dim = 128;
  c.qk_rope_head_dim = 64;
  c.v_head_dim = 128;
  c.n_routed_experts = 256;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 8;
  c.n_group = 8;
  c.topk_group = 4;
  c.first_k_dense_replace = 3;
  c.moe_layer_freq = 1;
  c.max_position_embeddings = 163840;
  c.bos_token_id = 0;
  c.eos_token_id = 1;
  c.eos_token_ids = {1};
  c.scoring_func = "sigmoid";
  c.topk_method = "noaux_tc";
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 2.5;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 10000;
  c.rope_scaling.yarn = true;
  c.rope_scaling.factor = 40;
  c.rope_scaling.beta_fast = 32;
  c.rope_scaling.beta_slow = 1;
  c.rope_scaling.mscale = 1.0;
  c.rope_scaling.mscale_all_dim = 1.0;
  c.rope_scaling.original_max_position_embeddings = 4096;
  c.tie_word_embeddings = false;
  c.fp8 = true;
  c.torch_dtype = "bfloat16";
  return c;
}

// DeepSeek-V2-Lite: no q LoRA, softmax gate, greedy top-6 of 64, 2 shared experts, no correction bias.
ModelConfig v2_lite_preset() {
  ModelConfig c = v3_preset();
  c.arch = ModelArch::DeepseekV2;
  c.hidden_size = 2048;
  c.intermediate_size = 10944;
  c.moe_intermediate_size = 1408;
  c.num_hidden_layers = 27;
  c.num_nextn_predict_layers = 0;
  c.num_attention_heads = 16;
  c.q_lora_rank = 0;
  c.n_routed_experts = 64;
  c.n_shared_experts = 2;
  c.num_experts_per_tok = 6;
  c.n_group = 1;
  c.topk_group = 1;
  c.first_k_dense_replace = 1;
  c.scoring_func = "softmax";
  c.topk_method = "greedy";
  c.norm_topk_prob = false;
  c.routed_scaling_factor = 1.0;
  c.rope_scaling.mscale = 0.707;
  c.rope_scaling.mscale_all_dim = 0.707;
  return c;
}

// Moonlight-16B-A3B: V3 architecture at V2-Lite size, sigmoid + noaux_tc in one group, plain RoPE.
ModelConfig moonlight_preset() {
  ModelConfig c = v3_preset();
  c.hidden_size = 2048;
  c.intermediate_size = 11264;
  c.moe_intermediate_size = 1408;
  c.num_hidden_layers = 27;
  c.num_nextn_predict_layers = 0;
  c.num_attention_heads = 16;
  c.q_lora_rank = 0;
  c.n_routed_experts = 64;
  c.n_shared_experts = 2;
  c.num_experts_per_tok = 6;
  c.n_group = 1;
  c.topk_group = 1;
  c.first_k_dense_replace = 1;
  c.routed_scaling_factor = 2.446;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 50000;
  c.rope_scaling = RopeScaling{};
  c.max_position_embeddings = 8192;
  return c;
}

// The unit-test model: V3 structure at toy width. Every FP8 projection has K a multiple of 128 (the w8a8
// activation tiles need it); kv_a_proj's N = 160 leaves a partial 128-row scale block on purpose.
ModelConfig tiny_preset() {
  ModelConfig c = v3_preset();
  c.hidden_size = 256;
  c.intermediate_size = 512;
  c.moe_intermediate_size = 128;
  c.num_hidden_layers = 2;
  c.first_k_dense_replace = 1;
  c.num_attention_heads = 4;
  c.q_lora_rank = 256;
  c.kv_lora_rank = 128;
  c.qk_nope_head_dim = 64;
  c.qk_rope_head_dim = 32;
  c.v_head_dim = 64;
  c.n_routed_experts = 16;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 4;
  c.n_group = 4;
  c.topk_group = 2;
  return c;
}

// V2 architecture at tiny width (q_proj instead of the q LoRA, softmax gate, greedy top-4, 2 shared experts).
ModelConfig tiny_v2_preset() {
  ModelConfig c = tiny_preset();
  const ModelConfig lite = v2_lite_preset();
  c.arch = ModelArch::DeepseekV2;
  c.num_nextn_predict_layers = 0;
  c.q_lora_rank = 0;
  c.n_shared_experts = 2;
  c.n_group = 1;
  c.topk_group = 1;
  c.scoring_func = lite.scoring_func;
  c.topk_method = lite.topk_method;
  c.norm_topk_prob = lite.norm_topk_prob;
  c.routed_scaling_factor = lite.routed_scaling_factor;
  c.rope_scaling = lite.rope_scaling;
  return c;
}

// ---------------------------------------------------------------------------------------------------------------
// Values. Counter-based: element i of a tensor is a hash of (seed, tensor name, i), so any chunking or thread
// count gives the same bytes and an MTP shared copy reproduces its source exactly.

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t tensor_key(uint64_t seed, const std::string& name) {
  uint64_t h = 0xCBF29CE484222325ull;  // FNV-1a
  for (unsigned char ch : name) h = (h ^ ch) * 0x100000001B3ull;
  return splitmix64(seed ^ splitmix64(h));
}

// N(0, 1) quantiles at the midpoints of 65536 equal-probability bins: a 16-bit uniform indexes the table, so one
// 64-bit hash yields four normal draws. The tails stop at ±4.3σ (bin 0's midpoint), which keeps FP8 block scales
// from being set by rare outliers.
const std::vector<float>& normal_quantile_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (int i = 0; i < 65536; ++i) {
      const double p = (i + 0.5) / 65536.0;
      // Acklam's rational approximation of the inverse normal CDF, then one Newton step on erfc (|error| < 1e-12).
      static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                                 1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00};
      static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                                 6.680131188771972e+01, -1.328068155288572e+01};
      static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                                 -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00};
      static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                                 3.754408661907416e+00};
      double x;
      if (p < 0.02425) {
        const double q = std::sqrt(-2 * std::log(p));
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
      } else if (p <= 1 - 0.02425) {
        const double q = p - 0.5, r = q * q;
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
      } else {
        const double q = std::sqrt(-2 * std::log(1 - p));
        x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
      }
      const double e = 0.5 * std::erfc(-x / std::sqrt(2.0)) - p;
      const double u = e * std::sqrt(2 * M_PI) * std::exp(x * x / 2);
      x = x - u / (1 + x * u / 2);
      t[size_t(i)] = float(x);
    }
    return t;
  }();
  return table;
}

struct Distribution {
  float mean = 0, stddev = 1;
};

// Scaled so activations stay well-conditioned: projections N(0, 1/fan_in) keep unit-RMS inputs at unit RMS,
// embeddings are unit scale, norm weights are 1 with a little noise (so a forward that ignores them differs from
// one that applies them), the correction bias is small next to the spread of sigmoid scores.
Distribution distribution_for(const TensorSpec& spec) {
  switch (spec.role) {
    case TensorRole::Embedding: return {0.0f, 1.0f};
    case TensorRole::Norm: return {1.0f, 0.05f};
    case TensorRole::CorrectionBias: return {0.0f, 0.05f};
    case TensorRole::Linear:
    case TensorRole::EhProj:
    case TensorRole::GateWeight:
    case TensorRole::LmHead: return {0.0f, float(1.0 / std::sqrt(double(spec.fan_in())))};
    case TensorRole::ScaleInv: break;
  }
  DEEPMOE_CHECK(false, "no distribution for scale tensor " + spec.name);
  return {};
}

int64_t row_count(const TensorSpec& spec) { return spec.shape.empty() ? 1 : (spec.shape.size() == 1 ? 1 : spec.shape[0]); }
int64_t row_length(const TensorSpec& spec) { return spec.numel() / std::max<int64_t>(row_count(spec), 1); }

// ---------------------------------------------------------------------------------------------------------------
// Output.

class OutputFile {
 public:
  explicit OutputFile(std::string path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) throw Error(std::string("cannot create file: ") + std::strerror(errno), {path_, "", ""});
  }
  ~OutputFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  void write(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, std::min<size_t>(n, size_t(1) << 30));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) throw Error(std::string("cannot write: ") + std::strerror(errno), {path_, "", ""});
      p += w;
      n -= size_t(w);
    }
  }
  void close() {
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) throw Error(std::string("cannot close: ") + std::strerror(errno), {path_, "", ""});
  }

 private:
  std::string path_;
  int fd_ = -1;
};

void write_text(const std::string& path, const std::string& text) {
  OutputFile f(path);
  f.write(text.data(), text.size());
  f.close();
}

// Generates one tensor (and, for an FP8 projection, its block scales) panel by panel into `file`. Panels are
// 128 rows (one FP8 scale row); a batch of panels is generated in parallel, then written in order.
class TensorWriter {
 public:
  TensorWriter(uint64_t seed, ThreadPool* pool) : seed_(seed), pool_(pool) {}

  // Writes `spec`; for an F8_E4M3 projection the scales go to pending_scales() for the ScaleInv tensor next.
  void write(const TensorSpec& spec, OutputFile& file) {
    if (spec.role == TensorRole::ScaleInv) {
      DEEPMOE_CHECK(pending_scales_.size() == size_t(spec.numel()), "scale tensor without its weight: " + spec.name);
      file.write(pending_scales_.data(), pending_scales_.size() * sizeof(float));
      pending_scales_.clear();
      return;
    }
    const int64_t rows = row_count(spec), cols = row_length(spec);
    const int64_t panel_rows = 128;
    const int64_t n_panels = (rows + panel_rows - 1) / panel_rows;
    const size_t elem_bytes = dtype_size_bytes(spec.dtype);
    const bool fp8 = spec.dtype == DType::F8_E4M3;
    const int64_t k_blocks = (cols + 127) / 128;
    if (fp8) pending_scales_.assign(size_t(n_panels * k_blocks), 0.0f);

    // ~32 MB of output per batch keeps both threads busy and memory small.
    const size_t panel_bytes = size_t(panel_rows * cols) * elem_bytes;
    const int64_t batch = std::max<int64_t>(1, int64_t((size_t(32) << 20) / std::max<size_t>(panel_bytes, 1)));
    std::vector<uint8_t>& out = out_;
    for (int64_t p0 = 0; p0 < n_panels; p0 += batch) {
      const int64_t p1 = std::min(n_panels, p0 + batch);
      const int64_t r0 = p0 * panel_rows, r1 = std::min(rows, p1 * panel_rows);
      out.resize(size_t((r1 - r0) * cols) * elem_bytes);
      parallel_for(pool_, p1 - p0, [&](int64_t b, int64_t e) {
        std::vector<float> values(size_t(panel_rows * cols));
        for (int64_t p = p0 + b; p < p0 + e; ++p) {
          const int64_t pr0 = p * panel_rows, pr1 = std::min(rows, pr0 + panel_rows);
          const size_t n = size_t((pr1 - pr0) * cols);
          generated_values(spec, seed_, pr0, pr1, values.data());
          uint8_t* dst = out.data() + size_t((pr0 - r0) * cols) * elem_bytes;
          switch (spec.dtype) {
            case DType::F8_E4M3:
              quantize_weight_128x128(values.data(), pr1 - pr0, cols, dst, pending_scales_.data() + p * k_blocks);
              break;
            case DType::BF16: convert_f32_to_bf16(values.data(), reinterpret_cast<uint16_t*>(dst), n); break;
            case DType::F32: std::memcpy(dst, values.data(), n * sizeof(float)); break;
            default: DEEPMOE_CHECK(false, "generator cannot write dtype of " + spec.name);
          }
        }
      });
      file.write(out.data(), out.size());
    }
  }

 private:
  uint64_t seed_;
  ThreadPool* pool_;
  std::vector<float> pending_scales_;
  std::vector<uint8_t> out_;  // kept across tensors: no fresh page faults per tensor
};

// A shard: a run of consecutive layout entries. An FP8 weight and its scale always share a shard.
struct Shard {
  size_t begin = 0, end = 0;
  uint64_t bytes = 0;
  std::string file;
};

std::vector<Shard> plan_shards(const std::vector<TensorSpec>& layout, uint64_t max_shard_bytes) {
  std::vector<Shard> shards(1);
  for (size_t i = 0; i < layout.size();) {
    size_t j = i + 1;
    uint64_t bytes = layout[i].nbytes();
    if (j < layout.size() && layout[j].role == TensorRole::ScaleInv) bytes += layout[j++].nbytes();
    if (shards.back().end > shards.back().begin && shards.back().bytes + bytes > max_shard_bytes) {
      shards.push_back({i, i, 0, {}});
    }
    shards.back().end = j;
    shards.back().bytes += bytes;
    i = j;
  }
  if (shards.size() == 1) {
    shards[0].file = "model.safetensors";
  } else {
    char name[64];
    for (size_t s = 0; s < shards.size(); ++s) {
      std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
      shards[s].file = name;
    }
  }
  return shards;
}

// The safetensors header for the shard: tensors in write order, padded with spaces to 8-byte alignment.
std::string shard_header(const std::vector<TensorSpec>& layout, const Shard& shard, uint64_t seed) {
  nlohmann::ordered_json h;
  h["__metadata__"] = {{"format", "pt"}, {kRandomWeightsMetadataKey, "seed " + std::to_string(seed)}};
  uint64_t offset = 0;
  for (size_t i = shard.begin; i < shard.end; ++i) {
    const TensorSpec& t = layout[i];
    h[t.name] = {{"dtype", std::string(dtype_name(t.dtype))},
                 {"shape", t.shape},
                 {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string text = h.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

void remove_stale_weights(const fs::path& dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const bool shard = name.starts_with("model") && name.ends_with(".safetensors");
    if (shard || name == "model.safetensors.index.json") fs::remove(entry.path(), ec);
  }
}

}  // namespace

void generated_values(const TensorSpec& spec, uint64_t seed, int64_t row_begin, int64_t row_end, float* out) {
  const Distribution d = distribution_for(spec);
  const float* normal = normal_quantile_table().data();
  const uint64_t key = tensor_key(seed, spec.value_source);
  const int64_t cols = row_length(spec);
  const uint64_t first = uint64_t(row_begin * cols), end = uint64_t(row_end * cols);
  // Element i takes 16-bit lane i % 4 of hash i / 4.
  for (uint64_t i = first; i < end;) {
    const uint64_t z = splitmix64(key + (i / 4) * 0xD1B54A32D192ED03ull);
    for (uint64_t lane = i % 4; lane < 4 && i < end; ++lane, ++i)
      out[i - first] = d.mean + d.stddev * normal[(z >> (16 * lane)) & 0xFFFF];
  }
}

std::vector<std::string> checkpoint_preset_names() { return {"tiny", "tiny-v2", "v2-lite", "moonlight", "v3"}; }

ModelConfig checkpoint_preset(const std::string& preset) {
  if (preset == "tiny") return tiny_preset();
  if (preset == "tiny-v2") return tiny_v2_preset();
  if (preset == "v2-lite") return v2_lite_preset();
  if (preset == "moonlight") return moonlight_preset();
  if (preset == "v3") return v3_preset();
  std::string known;
  for (const auto& n : checkpoint_preset_names()) known += (known.empty() ? "" : ", ") + n;
  throw Error("unknown checkpoint preset '" + preset + "' (known: " + known + ")", {"", "", "preset"});
}

ModelConfig generator_config(const GeneratorOptions& options) {
  ModelConfig c = checkpoint_preset(options.preset);
  if (options.layers != -1) {
    if (options.layers < 1 || options.layers > 1024)
      throw Error("--layers must be in [1, 1024], got " + std::to_string(options.layers), {"", "", "layers"});
    c.num_hidden_layers = options.layers;
  }
  if (options.dense_layers != -1) {
    if (options.dense_layers < 0 || options.dense_layers > c.num_hidden_layers)
      throw Error("--dense-layers must be in [0, " + std::to_string(c.num_hidden_layers) + "], got " +
                      std::to_string(options.dense_layers),
                  {"", "", "dense_layers"});
    c.first_k_dense_replace = options.dense_layers;
  } else {
    c.first_k_dense_replace = std::min(c.first_k_dense_replace, c.num_hidden_layers);
  }
  if (options.experts != -1) {
    if (options.experts < c.num_experts_per_tok || options.experts > 4096 || options.experts % c.n_group != 0)
      throw Error("--experts must be in [" + std::to_string(c.num_experts_per_tok) +
                      " (experts per token), 4096] and a multiple of the " + std::to_string(c.n_group) +
                      " expert groups, got " + std::to_string(options.experts),
                  {"", "", "experts"});
    c.n_routed_experts = options.experts;
  }
  if (options.mtp != -1) {
    if (options.mtp != 0 && c.arch != ModelArch::DeepseekV3)
      throw Error("MTP modules exist only in " + std::string(model_arch_name(ModelArch::DeepseekV3)) +
                      " checkpoints; preset '" + options.preset + "' is " + std::string(model_arch_name(c.arch)),
                  {"", "", "mtp"});
    c.num_nextn_predict_layers = options.mtp ? 1 : 0;
  }
  c.fp8 = options.fp8;
  // What we write must be what the loader accepts.
  return parse_model_config(model_config_to_json(c), "generated config.json");
}

GeneratedCheckpoint generate_checkpoint(const GeneratorOptions& options, const std::string& out_dir,
                                        ThreadPool* pool) {
  GeneratedCheckpoint result;
  result.config = generator_config(options);
  if (options.max_shard_bytes == 0) throw Error("the shard size limit must be positive", {"", "", "max_shard_bytes"});
  const std::vector<TensorSpec> layout = checkpoint_layout(result.config, options.fp8);

  const fs::path dir(out_dir);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir))
    throw Error("cannot create output folder: " + (ec ? ec.message() : std::string("not a directory")),
                {out_dir, "", ""});
  remove_stale_weights(dir);

  write_text((dir / "config.json").string(), model_config_to_json(result.config) + "\n");
  result.files.push_back("config.json");

  const std::vector<Shard> shards = plan_shards(layout, options.max_shard_bytes);
  uint64_t total_bytes = 0, written_bytes = 0;
  for (const TensorSpec& t : layout) total_bytes += t.nbytes();
  TensorWriter writer(options.seed, pool);
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  for (const Shard& shard : shards) {
    const std::string path = (dir / shard.file).string();
    OutputFile file(path);
    const std::string header = shard_header(layout, shard, options.seed);
    const uint64_t header_len = header.size();  // little-endian u64 (x86-64)
    file.write(&header_len, 8);
    file.write(header.data(), header.size());
    for (size_t i = shard.begin; i < shard.end; ++i) {
      writer.write(layout[i], file);
      weight_map[layout[i].name] = shard.file;
      written_bytes += layout[i].nbytes();
      if (options.progress) options.progress(written_bytes, total_bytes);
    }
    file.close();
    result.files.push_back(shard.file);
    result.tensor_bytes += shard.bytes;
  }
  result.tensors = int64_t(layout.size());
  if (shards.size() > 1) {
    nlohmann::ordered_json index;
    index["metadata"] = {{"total_size", result.tensor_bytes}};
    index["weight_map"] = std::move(weight_map);
    write_text((dir / "model.safetensors.index.json").string(), index.dump(2) + "\n");
    result.files.push_back("model.safetensors.index.json");
  }

  if (!options.tokenizer_dir.empty()) {
    for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) {
      const std::string src = (fs::path(options.tokenizer_dir) / name).string();
      write_text((dir / name).string(), read_text_file(src));
      result.files.push_back(name);
    }
  }
  return result;
}

}  // namespace deepmoe
