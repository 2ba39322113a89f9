#include "model/config.h"

#include <cmath>
#include <limits>
#include <optional>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mapped_file.h"

namespace deepmoe {
namespace {

using nlohmann::json;

// Upper bounds for every value that sizes an array or allocation (reliability.md §1 G5). They sit well above
// every published DeepSeek/Kimi/Moonlight config (V3: 61 layers, 256 experts, 129280 vocab, 7168 hidden).
constexpr int64_t kMaxVocab = int64_t(1) << 22;             // 4M
constexpr int64_t kMaxHidden = 65536;
constexpr int64_t kMaxIntermediate = int64_t(1) << 20;
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxNextnLayers = 16;
constexpr int64_t kMaxHeads = 1024;
constexpr int64_t kMaxLoraRank = 65536;
constexpr int64_t kMaxHeadDim = 4096;
constexpr int64_t kMaxExperts = 4096;
constexpr int64_t kMaxSharedExperts = 64;
constexpr int64_t kMaxPositions = int64_t(1) << 24;  // 16M tokens
constexpr size_t kMaxConfigBytes = size_t(16) << 20;

std::string json_type_name(const json& v) {
  if (v.is_number_float()) return "a floating-point number";
  if (v.is_number()) return "an integer";
  if (v.is_string()) return "a string";
  if (v.is_boolean()) return "a boolean";
  if (v.is_null()) return "null";
  if (v.is_array()) return "an array";
  return "an object";
}

// Typed, bounded access to the fields of one JSON object; every error names the file and the field.
class FieldReader {
 public:
  FieldReader(const json& object, const std::string& path, std::string prefix = "")
      : obj_(object), path_(path), prefix_(std::move(prefix)) {}

  [[noreturn]] void fail(const std::string& field, const std::string& message) const {
    throw Error(message, {.file = path_, .field = prefix_ + field});
  }

  // nullptr when absent or null.
  const json* find(const std::string& field) const {
    auto it = obj_.find(field);
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  const json& require(const std::string& field) const {
    const json* v = find(field);
    if (!v) fail(field, obj_.contains(field) ? "must not be null" : "missing required field");
    return *v;
  }

  int64_t integer(const std::string& field, const json& v, int64_t min, int64_t max) const {
    if (!v.is_number_integer()) fail(field, "expected an integer, got " + json_type_name(v));
    int64_t x;
    if (v.is_number_unsigned()) {
      uint64_t u = v.get<uint64_t>();
      if (u > uint64_t(std::numeric_limits<int64_t>::max())) fail(field, "value " + std::to_string(u) + " is too large");
      x = int64_t(u);
    } else {
      x = v.get<int64_t>();
    }
    if (x < min || x > max)
      fail(field, "value " + std::to_string(x) + " is outside the supported range [" + std::to_string(min) + ", " +
                      std::to_string(max) + "]");
    return x;
  }

  double number(const std::string& field, const json& v, double min, double max) const {
    if (!v.is_number()) fail(field, "expected a number, got " + json_type_name(v));
    double x = v.get<double>();
    if (!std::isfinite(x) || x < min || x > max)
      fail(field, "value " + v.dump() + " is outside the supported range [" + json(min).dump() + ", " +
                      json(max).dump() + "]");
    return x;
  }

  // A required / optional integer (T = int64_t) or number (T = double) within [min, max].
  template <class T>
  T req(const std::string& field, T min, T max) const {
    return bounded(field, require(field), min, max);
  }
  template <class T>
  T opt(const std::string& field, T fallback, T min, T max) const {
    const json* v = find(field);
    return v ? bounded(field, *v, min, max) : fallback;
  }

  bool opt_bool(const std::string& field, bool fallback) const {
    const json* v = find(field);
    if (!v) return fallback;
    if (!v->is_boolean()) fail(field, "expected a boolean, got " + json_type_name(*v));
    return v->get<bool>();
  }

  std::string opt_string(const std::string& field, const std::string& fallback) const {
    const json* v = find(field);
    if (!v) return fallback;
    if (!v->is_string()) fail(field, "expected a string, got " + json_type_name(*v));
    return v->get<std::string>();
  }

  // A string that must be one of `allowed`.
  std::string opt_choice(const std::string& field, const std::string& fallback,
                         std::initializer_list<const char*> allowed) const {
    std::string s = opt_string(field, fallback);
    std::string list;
    for (const char* a : allowed) {
      if (s == a) return s;
      list += std::string(list.empty() ? "" : ", ") + a;
    }
    fail(field, "unsupported value \"" + s + "\" (supported: " + list + ")");
  }

  // A nested object, or nullptr when absent or null.
  const json* opt_object(const std::string& field) const {
    const json* v = find(field);
    if (v && !v->is_object()) fail(field, "expected an object, got " + json_type_name(*v));
    return v;
  }

  const std::string& path() const { return path_; }

 private:
  int64_t bounded(const std::string& field, const json& v, int64_t min, int64_t max) const {
    return integer(field, v, min, max);
  }
  double bounded(const std::string& field, const json& v, double min, double max) const {
    return number(field, v, min, max);
  }

  const json& obj_;
  const std::string& path_;
  std::string prefix_;
};

// One numeric field of a config object: its name, where it goes in S, its bounds, and its default (none:
// required). The reader and the writer (model_config_to_json) both go through these tables, so each field's name
// stands next to its member once.
template <class S, class T>
struct NumericField {
  const char* name;
  T S::*member;
  T min, max;
  std::optional<T> fallback = std::nullopt;
};

template <class S, class T, size_t N>
void read_fields(const FieldReader& r, S& out, const NumericField<S, T> (&fields)[N]) {
  for (const auto& f : fields)
    out.*f.member = f.fallback ? r.opt<T>(f.name, *f.fallback, f.min, f.max) : r.req<T>(f.name, f.min, f.max);
}

template <class S, class T, size_t N, class Json>
void write_fields(const S& in, const NumericField<S, T> (&fields)[N], Json& j) {
  for (const auto& f : fields) j[f.name] = in.*f.member;
}

using IntField = NumericField<ModelConfig, int64_t>;
using NumField = NumericField<ModelConfig, double>;

// In reading order; the checks between the groups (num_key_value_heads, an even qk_rope_head_dim) come where
// their fields do, so the first problem of a config is the one reported.
constexpr IntField kShapeFields[] = {
    {"vocab_size", &ModelConfig::vocab_size, 1, kMaxVocab},
    {"hidden_size", &ModelConfig::hidden_size, 1, kMaxHidden},
    {"intermediate_size", &ModelConfig::intermediate_size, 1, kMaxIntermediate},
    {"moe_intermediate_size", &ModelConfig::moe_intermediate_size, 1, kMaxIntermediate},
    {"num_hidden_layers", &ModelConfig::num_hidden_layers, 1, kMaxLayers},
    {"num_nextn_predict_layers", &ModelConfig::num_nextn_predict_layers, 0, kMaxNextnLayers, 0},
    {"num_attention_heads", &ModelConfig::num_attention_heads, 1, kMaxHeads},
};
constexpr IntField kAttentionFields[] = {
    {"q_lora_rank", &ModelConfig::q_lora_rank, 0, kMaxLoraRank, 0},  // written as null when 0 (HF's "none")
    {"kv_lora_rank", &ModelConfig::kv_lora_rank, 1, kMaxLoraRank},
    {"qk_nope_head_dim", &ModelConfig::qk_nope_head_dim, 1, kMaxHeadDim},
    {"qk_rope_head_dim", &ModelConfig::qk_rope_head_dim, 2, kMaxHeadDim},
};
constexpr IntField kMoeFields[] = {
    {"v_head_dim", &ModelConfig::v_head_dim, 1, kMaxHeadDim},
    {"n_routed_experts", &ModelConfig::n_routed_experts, 1, kMaxExperts},
    {"n_shared_experts", &ModelConfig::n_shared_experts, 0, kMaxSharedExperts, 0},
    {"num_experts_per_tok", &ModelConfig::num_experts_per_tok, 1, kMaxExperts},
    {"n_group", &ModelConfig::n_group, 1, kMaxExperts, 1},
    {"topk_group", &ModelConfig::topk_group, 1, kMaxExperts, 1},
};
// first_k_dense_replace sits between these groups: its bound is num_hidden_layers.
constexpr IntField kLayoutFields[] = {
    {"moe_layer_freq", &ModelConfig::moe_layer_freq, 1, kMaxLayers, 1},
    {"max_position_embeddings", &ModelConfig::max_position_embeddings, 1, kMaxPositions},
};
constexpr NumField kScaleFields[] = {
    {"routed_scaling_factor", &ModelConfig::routed_scaling_factor, 1e-6, 1e6, 1.0},
    {"rms_norm_eps", &ModelConfig::rms_norm_eps, 1e-30, 1.0, 1e-6},
    {"rope_theta", &ModelConfig::rope_theta, 1.0, 1e12, 10000.0},
};
constexpr NumericField<RopeScaling, double> kYarnFields[] = {
    {"factor", &RopeScaling::factor, 1.0, 1e6},
    {"beta_fast", &RopeScaling::beta_fast, 1e-6, 1e6, 32},
    {"beta_slow", &RopeScaling::beta_slow, 1e-6, 1e6, 1},
    {"mscale", &RopeScaling::mscale, 0, 1e3, 1},
    {"mscale_all_dim", &RopeScaling::mscale_all_dim, 0, 1e3, 0},
};

ModelArch parse_arch(const FieldReader& r, const json& root) {
  const json& archs = r.require("architectures");
  if (!archs.is_array() || archs.empty() || !archs[0].is_string())
    r.fail("architectures", "expected a non-empty array of strings");
  std::string name = archs[0].get<std::string>();
  if (name == "DeepseekV3ForCausalLM") return ModelArch::DeepseekV3;
  if (name == "DeepseekV2ForCausalLM") return ModelArch::DeepseekV2;
  r.fail("architectures", "unsupported architecture \"" + name +
                              "\" (supported: DeepseekV3ForCausalLM, DeepseekV2ForCausalLM)");
}

void parse_rope_scaling(const FieldReader& r, ModelConfig& c) {
  const json* block = r.opt_object("rope_scaling");
  if (!block) return;
  FieldReader y(*block, r.path(), "rope_scaling.");
  // Older HF configs say "type", newer ones "rope_type".
  std::string type = y.find("type") ? y.opt_string("type", "") : y.opt_string("rope_type", "");
  if (type != "yarn")
    y.fail(y.find("type") ? "type" : "rope_type",
           type.empty() ? "missing rope scaling type (supported: yarn)"
                        : "unsupported rope scaling type \"" + type + "\" (supported: yarn)");
  RopeScaling& s = c.rope_scaling;
  s.yarn = true;
  read_fields(y, s, kYarnFields);
  s.original_max_position_embeddings = y.req<int64_t>("original_max_position_embeddings", 1, kMaxPositions);
  if (s.beta_fast < s.beta_slow) y.fail("beta_fast", "must be >= beta_slow");
}

void parse_quantization(const FieldReader& r, ModelConfig& c) {
  const json* block = r.opt_object("quantization_config");
  if (!block) return;
  FieldReader q(*block, r.path(), "quantization_config.");
  q.opt_choice("quant_method", "fp8", {"fp8"});
  q.opt_choice("fmt", "e4m3", {"e4m3"});
  q.opt_choice("activation_scheme", "dynamic", {"dynamic"});
  const json& block_size = q.require("weight_block_size");
  // The kernels implement DeepSeek's 128x128 weight blocks only (reference §2).
  if (!block_size.is_array() || block_size.size() != 2 || !block_size[0].is_number_integer() ||
      !block_size[1].is_number_integer() || block_size[0].get<int64_t>() != 128 ||
      block_size[1].get<int64_t>() != 128)
    q.fail("weight_block_size", "unsupported value " + block_size.dump() + " (supported: [128, 128])");
  c.fp8 = true;
  c.fp8_block_n = 128;
  c.fp8_block_k = 128;
  c.fp8_scale_fmt = q.find("scale_fmt") ? q.opt_choice("scale_fmt", "", {"ue8m0"}) : "";
}

void parse_token_ids(const FieldReader& r, const json& root, ModelConfig& c) {
  c.bos_token_id = r.opt<int64_t>("bos_token_id", -1, 0, c.vocab_size - 1);
  const json* eos = r.find("eos_token_id");
  if (eos && eos->is_array()) {
    if (eos->empty() || eos->size() > 64) r.fail("eos_token_id", "expected 1 to 64 token ids");
    for (const json& e : *eos) c.eos_token_ids.push_back(r.integer("eos_token_id", e, 0, c.vocab_size - 1));
  } else if (eos) {
    c.eos_token_ids.push_back(r.integer("eos_token_id", *eos, 0, c.vocab_size - 1));
  }
  c.eos_token_id = c.eos_token_ids.empty() ? -1 : c.eos_token_ids[0];
}

void check_routing(const FieldReader& r, const ModelConfig& c) {
  if (c.num_experts_per_tok > c.n_routed_experts)
    r.fail("num_experts_per_tok", "is " + std::to_string(c.num_experts_per_tok) + ", more than n_routed_experts " +
                                      std::to_string(c.n_routed_experts));
  if (c.n_routed_experts % c.n_group != 0)
    r.fail("n_group", std::to_string(c.n_routed_experts) + " routed experts do not split into " +
                          std::to_string(c.n_group) + " equal groups");
  if (c.topk_group > c.n_group)
    r.fail("topk_group", "is " + std::to_string(c.topk_group) + ", more than n_group " + std::to_string(c.n_group));
  bool group_limited = c.topk_method == "noaux_tc" || c.topk_method == "group_limited_greedy";
  int64_t per_group = c.n_routed_experts / c.n_group;
  if (group_limited && c.n_group > 1) {
    if (c.num_experts_per_tok > c.topk_group * per_group)
      r.fail("num_experts_per_tok", "exceeds the " + std::to_string(c.topk_group * per_group) +
                                        " experts in the topk_group kept groups");
    // noaux_tc scores a group by the sum of its top-2 experts (reference §1.6).
    if (c.topk_method == "noaux_tc" && per_group < 2)
      r.fail("n_group", "noaux_tc needs at least 2 experts per group");
  }
}

}  // namespace

std::string_view model_arch_name(ModelArch arch) {
  return arch == ModelArch::DeepseekV3 ? "DeepseekV3ForCausalLM" : "DeepseekV2ForCausalLM";
}

bool ModelConfig::is_moe_layer(int64_t layer) const {
  return n_routed_experts > 0 && layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
}

double ModelConfig::attention_softmax_scale() const {
  double scale = 1.0 / std::sqrt(double(qk_head_dim()));
  if (rope_scaling.yarn && rope_scaling.mscale_all_dim != 0 && rope_scaling.factor > 1) {
    double m = 0.1 * rope_scaling.mscale_all_dim * std::log(rope_scaling.factor) + 1.0;
    scale *= m * m;
  }
  return scale;
}

ModelConfig parse_model_config(std::string_view json_text, const std::string& path_for_errors) {
  // nlohmann stops at a NUL as if the input ended; anything after it would go unchecked.
  if (size_t nul = json_text.find('\0'); nul != std::string_view::npos)
    throw Error("has a NUL byte at offset " + std::to_string(nul), {.file = path_for_errors});
  json root;
  try {
    root = json::parse(json_text.begin(), json_text.end());
  } catch (const json::exception& e) {
    throw Error(std::string("not valid JSON: ") + e.what(), {.file = path_for_errors});
  }
  if (!root.is_object()) throw Error("top level is not a JSON object", {.file = path_for_errors});

  FieldReader r(root, path_for_errors);
  ModelConfig c;
  c.arch = parse_arch(r, root);
  r.opt_choice("hidden_act", "silu", {"silu"});
  if (r.opt_bool("attention_bias", false)) r.fail("attention_bias", "unsupported value true (MLA has no biases)");
  if (!r.opt_bool("rope_interleave", true)) r.fail("rope_interleave", "unsupported value false");

  read_fields(r, c, kShapeFields);
  if (r.opt<int64_t>("num_key_value_heads", c.num_attention_heads, 1, kMaxHeads) != c.num_attention_heads)
    r.fail("num_key_value_heads", "must equal num_attention_heads (MLA)");
  read_fields(r, c, kAttentionFields);
  // RoPE rotates interleaved pairs (reference §1.4).
  if (c.qk_rope_head_dim % 2 != 0) r.fail("qk_rope_head_dim", "must be even (RoPE acts on pairs)");
  read_fields(r, c, kMoeFields);
  c.first_k_dense_replace = r.opt<int64_t>("first_k_dense_replace", 0, 0, c.num_hidden_layers);
  read_fields(r, c, kLayoutFields);
  parse_token_ids(r, root, c);

  // V2's HF defaults are softmax/greedy, V3's sigmoid/noaux_tc (configuration_deepseek.py).
  bool v3 = c.arch == ModelArch::DeepseekV3;
  c.scoring_func = r.opt_choice("scoring_func", v3 ? "sigmoid" : "softmax", {"sigmoid", "softmax"});
  c.topk_method =
      r.opt_choice("topk_method", v3 ? "noaux_tc" : "greedy", {"noaux_tc", "greedy", "group_limited_greedy"});
  c.norm_topk_prob = r.opt_bool("norm_topk_prob", false);
  read_fields(r, c, kScaleFields);
  parse_rope_scaling(r, c);
  c.tie_word_embeddings = r.opt_bool("tie_word_embeddings", false);
  parse_quantization(r, c);
  c.torch_dtype = r.opt_string("torch_dtype", "");
  check_routing(r, c);
  return c;
}

ModelConfig load_model_config(const std::string& model_dir) {
  std::string path = model_dir + "/config.json";
  return parse_model_config(read_text_file(path, kMaxConfigBytes), path);
}

std::string model_config_to_json(const ModelConfig& c) {
  // nlohmann::json keeps keys sorted: the order HF's save_pretrained writes them in.
  bool v3 = c.arch == ModelArch::DeepseekV3;
  auto null_if = [](bool is_null, int64_t v) { return is_null ? json(nullptr) : json(v); };
  json j;
  write_fields(c, kShapeFields, j);
  write_fields(c, kAttentionFields, j);
  write_fields(c, kMoeFields, j);
  write_fields(c, kLayoutFields, j);
  write_fields(c, kScaleFields, j);
  j["architectures"] = json::array({std::string(model_arch_name(c.arch))});
  j["attention_bias"] = false;
  j["bos_token_id"] = null_if(c.bos_token_id < 0, c.bos_token_id);
  if (c.eos_token_ids.size() > 1)
    j["eos_token_id"] = c.eos_token_ids;
  else
    j["eos_token_id"] = null_if(c.eos_token_id < 0, c.eos_token_id);
  j["first_k_dense_replace"] = c.first_k_dense_replace;
  j["hidden_act"] = "silu";
  j["model_type"] = v3 ? "deepseek_v3" : "deepseek_v2";
  j["norm_topk_prob"] = c.norm_topk_prob;
  j["num_key_value_heads"] = c.num_attention_heads;
  j["q_lora_rank"] = null_if(c.q_lora_rank == 0, c.q_lora_rank);
  if (c.fp8) {
    json q;
    q["activation_scheme"] = "dynamic";
    q["fmt"] = "e4m3";
    q["quant_method"] = "fp8";
    if (!c.fp8_scale_fmt.empty()) q["scale_fmt"] = c.fp8_scale_fmt;
    q["weight_block_size"] = json::array({c.fp8_block_n, c.fp8_block_k});
    j["quantization_config"] = q;
  }
  if (c.rope_scaling.yarn) {
    json y;
    write_fields(c.rope_scaling, kYarnFields, y);
    y["original_max_position_embeddings"] = c.rope_scaling.original_max_position_embeddings;
    y["type"] = "yarn";
    j["rope_scaling"] = y;
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["scoring_func"] = c.scoring_func;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["topk_method"] = c.topk_method;
  if (!c.torch_dtype.empty()) j["torch_dtype"] = c.torch_dtype;
  return j.dump(2) + "\n";
}

RopeParams rope_params(const ModelConfig& c) {
  RopeParams rp;
  rp.rope_dim = int(c.qk_rope_head_dim);
  rp.theta = c.rope_theta;
  rp.yarn = c.rope_scaling.yarn;
  rp.factor = c.rope_scaling.factor;
  rp.beta_fast = c.rope_scaling.beta_fast;
  rp.beta_slow = c.rope_scaling.beta_slow;
  rp.mscale = c.rope_scaling.mscale;
  rp.mscale_all_dim = c.rope_scaling.mscale_all_dim;
  rp.original_max_position = c.rope_scaling.original_max_position_embeddings;
  return rp;
}

}  // namespace deepmoe
