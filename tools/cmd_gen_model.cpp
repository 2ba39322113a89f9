// `deepmoe gen-model`: a random checkpoint in the exact Hugging Face layout (model/checkpoint_generator.h).
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <memory>

#include "command.h"
#include "core/thread_pool.h"
#include "model/checkpoint_generator.h"

namespace deepmoe::tools {
namespace {

struct GenModelArgs {
  GeneratorOptions options;
  std::string dtype = "fp8";
  bool mtp = false, no_mtp = false;
  double max_shard_gb = 4.0;
  std::string out;
  int threads = 0;
};

void run_gen_model(const GenModelArgs& args) {
  GeneratorOptions options = args.options;
  options.fp8 = args.dtype == "fp8";
  options.mtp = args.mtp ? 1 : (args.no_mtp ? 0 : -1);
  options.max_shard_bytes = uint64_t(args.max_shard_gb * double(uint64_t(1) << 30));
  const auto t0 = std::chrono::steady_clock::now();
  ThreadPool pool(args.threads);
  const GeneratedCheckpoint ckpt = generate_checkpoint(options, args.out, &pool);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const ModelConfig& c = ckpt.config;
  std::printf("wrote %s: %s preset '%s', %lld layers (%lld dense) + %lld MTP, %s, %lld tensors, %.3f GB in %zu "
              "file(s), %.2f s\n",
              args.out.c_str(), std::string(model_arch_name(c.arch)).c_str(), options.preset.c_str(),
              (long long)c.num_hidden_layers, (long long)c.first_k_dense_replace,
              (long long)c.num_nextn_predict_layers, options.fp8 ? "FP8 e4m3 + 128x128 scales" : "BF16",
              (long long)ckpt.tensors, double(ckpt.tensor_bytes) / 1e9, ckpt.files.size(), seconds);
}

CommandRegistration registration{
    {"gen-model", "Write a random checkpoint in the Hugging Face DeepSeek layout (for tests and benchmarks)",
     [](CLI::App& sub) {
       auto args = std::make_shared<GenModelArgs>();
       args->options.tokenizer_dir = DEEPMOE_ASSETS_DIR "/tokenizer";
       std::string presets;
       for (const auto& p : checkpoint_preset_names()) presets += (presets.empty() ? "" : "|") + p;
       sub.add_option("--preset", args->options.preset, "Model shape: " + presets +
                      " (tiny: hidden 256, 2 layers, 16 experts; the others have the official dimensions; all use "
                      "the DeepSeek-V3 tokenizer's vocab of 129280)")
           ->capture_default_str();
       sub.add_option("--layers", args->options.layers, "num_hidden_layers (default: the preset's)")
           ->check(CLI::Range(1, 1024));
       sub.add_option("--dense-layers", args->options.dense_layers,
                      "first_k_dense_replace: leading dense-MLP layers (default: the preset's, at most --layers)")
           ->check(CLI::Range(0, 1024));
       sub.add_option("--dtype", args->dtype, "Projection weights: fp8 (e4m3 + weight_scale_inv) or bf16")
           ->check(CLI::IsMember({"fp8", "bf16"}))
           ->capture_default_str();
       sub.add_option("--seed", args->options.seed, "Random seed (same seed, same bytes)")->capture_default_str();
       auto* mtp = sub.add_flag("--mtp", args->mtp, "Include one MTP module (default for tiny and v3)");
       sub.add_flag("--no-mtp", args->no_mtp, "No MTP module")->excludes(mtp);
       sub.add_option("--max-shard-gb", args->max_shard_gb,
                      "Split into model-XXXXX-of-YYYYY.safetensors + index.json above this many GB of tensors")
           ->check(CLI::PositiveNumber)
           ->capture_default_str();
       sub.add_option("--tokenizer", args->options.tokenizer_dir,
                      "Folder with tokenizer.json + tokenizer_config.json to copy in (\"\" for none)")
           ->capture_default_str();
       sub.add_option("--threads", args->threads, "Threads (0 = all hardware threads)")->check(CLI::NonNegativeNumber);
       sub.add_option("--out,-o", args->out, "Output folder (created if missing)")->required();
       sub.callback([args] { run_gen_model(*args); });
     }}};

}  // namespace
}  // namespace deepmoe::tools
