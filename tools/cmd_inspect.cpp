// `deepmoe inspect DIR`: what a checkpoint folder holds — architecture, parameter counts (total / active per
// token, MTP separately), bytes by dtype, KV-cache bytes per token, which tensors are FP8 (checkpoint/model_summary.h).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "checked_output.h"
#include "command.h"
#include "core/error.h"
#include "model/config.h"
#include "checkpoint/model_summary.h"
#include "model/safetensors.h"

namespace deepmoe::tools {
namespace {

struct InspectArgs {
  std::string dir;
  bool json = false;
};

std::string billions(int64_t n) {
  char buf[48];
  if (n >= 1000000000)
    std::snprintf(buf, sizeof buf, "%.2fB (%lld)", double(n) / 1e9, (long long)n);
  else
    std::snprintf(buf, sizeof buf, "%.3fM", double(n) / 1e6);
  return buf;
}

std::string gigabytes(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f GB", bytes / 1e9);
  return buf;
}

void print_inspection(const InspectArgs& args) {
  const ModelConfig c = load_model_config(args.dir);
  const Checkpoint ckpt = Checkpoint::open(args.dir, Checkpoint::Populate::Never);
  std::vector<StoredTensor> stored;
  for (const std::string& name : ckpt.names()) {
    const TensorInfo& info = ckpt.info(name);
    stored.push_back({name, info.dtype, info.nbytes()});
  }
  const CheckpointSummary s = summarize_checkpoint(c, stored);
  const ParameterCounts p = count_parameters(c);
  const KvCacheSize kv = kv_cache_size(c);
  int64_t moe_layers = 0;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) moe_layers += c.is_moe_layer(l);
  const double decode_bytes = decode_weight_bytes_per_step(c, c.fp8, 1);

  if (args.json) {
    nlohmann::ordered_json j;
    j["dir"] = args.dir;
    j["architecture"] = std::string(model_arch_name(c.arch));
    j["layers"] = c.num_hidden_layers;
    j["dense_layers"] = c.num_hidden_layers - moe_layers;
    j["moe_layers"] = moe_layers;
    j["mtp_modules"] = c.num_nextn_predict_layers;
    j["fp8"] = c.fp8;
    j["parameters"] = {{"total", p.total},
                       {"active_per_token", p.active_per_token},
                       {"embedding", p.embedding},
                       {"lm_head", p.lm_head},
                       {"routed_experts", p.routed_experts},
                       {"mtp_total", p.mtp_total},
                       {"mtp_active_per_token", p.mtp_active_per_token}};
    j["kv_bytes_per_token"] = {{"values_per_layer", kv.absorbed_values_per_layer},
                               {"per_layer_f32", kv.absorbed_values_per_layer * 4},
                               {"per_layer_bf16", kv.absorbed_values_per_layer * 2},
                               {"absorbed_f32", kv.absorbed_f32_bytes_per_token()},
                               {"absorbed_bf16", kv.absorbed_bf16_bytes_per_token()},
                               {"naive_bf16", kv.naive_bf16_bytes_per_token()}};
    j["bytes_by_dtype"] = s.bytes_by_dtype;
    j["tensors_by_dtype"] = s.tensors_by_dtype;
    j["total_bytes"] = s.total_bytes;
    j["files"] = ckpt.files().size();
    j["random_weights"] = ckpt.random_weights();
    j["fp8_tensors"] = s.fp8_patterns;
    j["decode_weight_bytes_per_token"] = decode_bytes;
    j["missing"] = s.missing;
    j["unexpected"] = s.unexpected;
    write_stdout(j.dump(2) + "\n");
    return;
  }

  std::printf("model: %s\n", args.dir.c_str());
  std::printf("architecture: %s, %lld layers (%lld dense + %lld MoE), %lld MTP module(s)\n",
              std::string(model_arch_name(c.arch)).c_str(), (long long)c.num_hidden_layers,
              (long long)(c.num_hidden_layers - moe_layers), (long long)moe_layers,
              (long long)c.num_nextn_predict_layers);
  std::printf("  hidden %lld, vocab %lld, heads %lld, q_lora_rank %lld, kv_lora_rank %lld, qk_nope/rope/v %lld/%lld/%lld\n",
              (long long)c.hidden_size, (long long)c.vocab_size, (long long)c.num_attention_heads,
              (long long)c.q_lora_rank, (long long)c.kv_lora_rank, (long long)c.qk_nope_head_dim,
              (long long)c.qk_rope_head_dim, (long long)c.v_head_dim);
  std::printf("  MoE: %lld routed experts (top-%lld, %lld groups keep %lld, %s + %s, scale %g) + %lld shared, "
              "expert inter %lld; dense inter %lld\n",
              (long long)c.n_routed_experts, (long long)c.num_experts_per_tok, (long long)c.n_group,
              (long long)c.topk_group, c.scoring_func.c_str(), c.topk_method.c_str(), c.routed_scaling_factor,
              (long long)c.n_shared_experts, (long long)c.moe_intermediate_size, (long long)c.intermediate_size);
  std::printf("  rope theta %g%s, attention softmax scale %.7f\n", c.rope_theta,
              c.rope_scaling.yarn ? (", YaRN factor " + std::to_string(c.rope_scaling.factor)).c_str() : "",
              c.attention_softmax_scale());
  std::printf("parameters: %s total, %s active per token (routed experts %s; embedding %s, lm_head %s)\n",
              billions(p.total).c_str(), billions(p.active_per_token).c_str(), billions(p.routed_experts).c_str(),
              billions(p.embedding).c_str(), billions(p.lm_head).c_str());
  if (c.num_nextn_predict_layers > 0)
    std::printf("  MTP: %s unique (plus its stored copies of the shared embedding and head), %s active per token\n",
                billions(p.mtp_total).c_str(), billions(p.mtp_active_per_token).c_str());
  std::printf("KV cache per token per layer: %lld values (kv_lora_rank + rope dims) = %lld B FP32, %lld B BF16\n",
              (long long)kv.absorbed_values_per_layer, (long long)kv.absorbed_values_per_layer * 4,
              (long long)kv.absorbed_values_per_layer * 2);
  std::printf("KV cache per token (absorbed: %lld values x %lld layers): %llu B FP32, %llu B BF16 (naive BF16: %llu B)\n",
              (long long)kv.absorbed_values_per_layer, (long long)kv.layers,
              (unsigned long long)kv.absorbed_f32_bytes_per_token(),
              (unsigned long long)kv.absorbed_bf16_bytes_per_token(),
              (unsigned long long)kv.naive_bf16_bytes_per_token());
  std::printf("weights: %s in %zu safetensors file(s)%s\n", gigabytes(double(s.total_bytes)).c_str(),
              ckpt.files().size(), ckpt.random_weights() ? ", random (written by deepmoe gen-model)" : "");
  for (const auto& [dtype, bytes] : s.bytes_by_dtype)
    std::printf("  %-8s %6lld tensors  %s\n", dtype.c_str(), (long long)s.tensors_by_dtype.at(dtype),
                gigabytes(double(bytes)).c_str());
  std::printf("decode reads %s of weights per token (batch 1)\n", gigabytes(decode_bytes).c_str());
  if (s.fp8_patterns.empty()) {
    std::printf("FP8 tensors: none\n");
  } else {
    std::printf("FP8 tensors (F8_E4M3, each with a 128x128-block weight_scale_inv):\n");
    for (const auto& [pattern, count] : s.fp8_patterns) std::printf("  %6lld  %s\n", (long long)count, pattern.c_str());
  }
  if (!s.missing.empty() || !s.unexpected.empty()) {
    std::printf("layout: %zu tensor(s) the config implies are missing, %zu unexpected\n", s.missing.size(),
                s.unexpected.size());
    for (size_t i = 0; i < std::min<size_t>(s.missing.size(), 10); ++i)
      std::printf("  missing: %s\n", s.missing[i].c_str());
    for (size_t i = 0; i < std::min<size_t>(s.unexpected.size(), 10); ++i)
      std::printf("  unexpected: %s\n", s.unexpected[i].c_str());
  }
}

void run_inspect(InspectArgs args) {
  const bool defaulted = args.dir.empty();
  if (defaulted) args.dir = default_model_dir();
  try {
    print_inspection(args);
  } catch (const Error& e) {
    if (defaulted && e.context().file.starts_with(args.dir))
      throw Error(e.message() + " (the default model; run `make demo` to create it, or name a model folder)",
                  e.context());
    throw;
  }
}

CommandRegistration registration{{"inspect", "Show a checkpoint's architecture, parameter counts, bytes by dtype, "
                                             "KV bytes per token and FP8 tensors",
                                  [](CLI::App& sub) {
                                    auto args = std::make_shared<InspectArgs>();
                                    sub.add_option("dir", args->dir,
                                                   "Model folder (config.json + safetensors); default: "
                                                   "$DEEPMOE_MODEL or the bundled model made by `make demo`");
                                    sub.add_flag("--json", args->json, "One JSON object instead of text");
                                    sub.callback([args] { run_inspect(*args); });
                                  }}};

}  // namespace
}  // namespace deepmoe::tools
