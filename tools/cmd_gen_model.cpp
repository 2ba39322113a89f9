// `deepmoe gen-model`: a random checkpoint in the exact Hugging Face layout (checkpoint/checkpoint_generator.h). It says
// how many bytes it will write before it starts (a real-shape preset is tens of GB), shows bytes and time left
// on a terminal, and will not write over a folder that holds anything but the same generated model unless
// --force is given.
#include <CLI/CLI.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "command.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "core/thread_pool.h"
#include "checkpoint/checkpoint_generator.h"
#include "model/safetensors.h"
#include "runtime/terminal_progress.h"

namespace deepmoe::tools {
namespace {

namespace fs = std::filesystem;

struct GenModelArgs {
  GeneratorOptions options;
  std::string dtype = "fp8";
  bool mtp = false, no_mtp = false;
  double max_shard_gb = 4.0;
  std::string out;
  int threads = 0;
  bool force = false;
  bool quiet = false;
};

std::string gigabytes(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f GB", double(bytes) / 1e9);
  return buf;
}

// True when `dir` holds a checkpoint that gen-model wrote with exactly this config.json: writing it again replaces
// random weights by random weights of the same model, so nothing of value can be lost.
bool holds_same_generated_model(const fs::path& dir, const std::string& config_text) {
  try {
    if (read_text_file((dir / "config.json").string()) != config_text) return false;
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (entry.path().extension() != ".safetensors") continue;
      if (!SafetensorsFile::open(entry.path().string())->metadata().count(kRandomWeightsMetadataKey)) return false;
    }
    return true;
  } catch (const std::exception&) {
    return false;  // unreadable or not a checkpoint: not ours to replace
  }
}

// Refuses to write into a folder with other content unless --force: gen-model replaces config.json, the weights
// and the tokenizer files, which would silently destroy a real model that happens to be there.
void check_output_folder(const std::string& out, const std::string& config_text, bool force) {
  const fs::path dir(out);
  std::error_code ec;
  if (!fs::exists(dir, ec)) return;
  if (!fs::is_directory(dir, ec)) throw Error("exists and is not a folder", {out, "", ""});
  if (fs::is_empty(dir, ec) || force || holds_same_generated_model(dir, config_text)) return;
  const bool has_config = fs::exists(dir / "config.json", ec);
  throw Error(std::string(has_config ? "already holds a different model" : "is not empty") +
                  "; gen-model would replace its config.json, weights and tokenizer files: pass --force to do that, "
                  "or choose another --out",
              {out, "", ""});
}

void run_gen_model(const GenModelArgs& args) {
  GeneratorOptions options = args.options;
  options.fp8 = args.dtype == "fp8";
  options.mtp = args.mtp ? 1 : (args.no_mtp ? 0 : -1);
  options.max_shard_bytes = uint64_t(args.max_shard_gb * double(uint64_t(1) << 30));
  const ModelConfig config = generator_config(options);
  check_output_folder(args.out, model_config_to_json(config) + "\n", args.force);
  uint64_t total_bytes = 0;
  for (const TensorSpec& t : checkpoint_layout(config, options.fp8)) total_bytes += t.nbytes();
  if (!args.quiet)
    std::fprintf(stderr, "gen-model: writing %s of random weights to %s\n", gigabytes(total_bytes).c_str(),
                 args.out.c_str());

  const auto t0 = std::chrono::steady_clock::now();
  TerminalProgress bar(stderr);
  if (!args.quiet && bar.enabled()) {
    options.progress = [&](uint64_t written, uint64_t total) {
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double fraction = total ? double(written) / double(total) : 1.0;
      char label[96];
      if (fraction > 0 && seconds > 0.5)
        std::snprintf(label, sizeof label, "%s of %s, %.0f s left", gigabytes(written).c_str(),
                      gigabytes(total).c_str(), seconds * (1 - fraction) / fraction);
      else
        std::snprintf(label, sizeof label, "%s of %s", gigabytes(written).c_str(), gigabytes(total).c_str());
      bar.update(label, fraction);
    };
  }
  ThreadPool pool(args.threads);
  const GeneratedCheckpoint ckpt = generate_checkpoint(options, args.out, &pool);
  bar.finish();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  size_t weight_files = 0;  // as inspect counts them: the safetensors files
  for (const std::string& f : ckpt.files) weight_files += f.ends_with(".safetensors");
  const ModelConfig& c = ckpt.config;
  std::printf("wrote %s: %s preset '%s', %lld layers (%lld dense) + %lld MTP, %s, %lld tensors, %s in %zu "
              "safetensors file(s), %.2f s\n",
              args.out.c_str(), std::string(model_arch_name(c.arch)).c_str(), options.preset.c_str(),
              (long long)c.num_hidden_layers, (long long)c.first_k_dense_replace,
              (long long)c.num_nextn_predict_layers, options.fp8 ? "FP8 e4m3 + 128x128 scales" : "BF16",
              (long long)ckpt.tensors, gigabytes(ckpt.tensor_bytes).c_str(), weight_files, seconds);
}

CommandRegistration registration{
    {"gen-model", "Write a checkpoint of random weights in the Hugging Face DeepSeek layout (for tests and benchmarks)",
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
       sub.add_option("--experts", args->options.experts,
                      "Routed experts per MoE layer (default: the preset's); fewer keep the bytes each decoded "
                      "token reads but shrink the file")
           ->check(CLI::Range(1, 4096));
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
       sub.add_flag("--force", args->force,
                    "Write even when the output folder holds other files or a different model (its config.json, "
                    "weights and tokenizer files are replaced)");
       sub.add_flag("-q,--quiet", args->quiet, "No size line and no progress bar on stderr");
       sub.callback([args] { run_gen_model(*args); });
     }}};

}  // namespace
}  // namespace deepmoe::tools
