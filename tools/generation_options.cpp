#include "generation_options.h"

#include <CLI/CLI.hpp>

#include "command.h"
#include "max_tokens_option.h"
#include "model_run_options.h"
#include "progress.h"
#include "seed_option.h"

namespace deepmoe::tools {

void add_model_options(CLI::App& app, ModelArgs& args) {
  app.add_option("-m,--model", args.model_dir,
                 "Model folder (config.json, *.safetensors, tokenizer.json); default: $DEEPMOE_MODEL or the bundled "
                 "model made by `make demo`");
  app.add_option("-t,--threads", args.threads, "Worker threads (0 = one per hardware thread)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--gemm", args.gemm,
                 "FP8 matrix-multiply mode: w8a32 (weights dequantized on the fly, FP32 activations; the most "
                 "accurate), w8a8 (activations quantized to FP8 in blocks of 128) or w8a16 (activations rounded to "
                 "BF16)")
      ->check(CLI::IsMember({"w8a32", "w8a8", "w8a16"}))
      ->capture_default_str();
  app.add_option("--kv-dtype", args.kv_dtype, "KV cache storage: f32 or bf16")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  app.add_option("--attention", args.attention,
                 "Attention form: absorbed (default; attends in the compressed latent space) or naive (expands full "
                 "per-head keys and values from it; the reference form)")
      ->check(CLI::IsMember({"absorbed", "naive"}))
      ->capture_default_str();
  ModelRunArgs::add_expert_parallel_options(app, args.redundant_experts, args.micro_batches, args.rebalance_every);
  add_quiet_option(app);
}

void add_request_options(CLI::App& app, RequestArgs& args, double default_temperature, int64_t default_max_tokens,
                         const std::string& temperature_note) {
  args.sampling.temperature = default_temperature;
  add_max_tokens_option(app, args.max_tokens, default_max_tokens);
  app.add_option("--temperature,--temp", args.sampling.temperature,
                 "Sampling temperature; 0 = greedy. " + temperature_note)
      ->capture_default_str();
  app.add_option("--top-k", args.sampling.top_k, "Keep the k most likely tokens (0 = off)")->capture_default_str();
  app.add_option("--top-p", args.sampling.top_p, "Nucleus sampling mass in (0, 1] (1 = off)")->capture_default_str();
  app.add_option("--min-p", args.sampling.min_p, "Drop tokens below min-p times the top probability (0 = off)")
      ->capture_default_str();
  app.add_option("--repeat-penalty", args.sampling.repetition_penalty,
                 "Penalty for tokens already in the prompt or output, as in llama.cpp (1 = off, above 1 = fewer "
                 "repeats)")
      ->capture_default_str();
  app.add_option("--repeat-last-n", args.sampling.penalty_last_n,
                 "Tokens the repetition penalty looks back over (0 = all)")
      ->capture_default_str();
  app.add_option("--presence-penalty", args.sampling.presence_penalty, "OpenAI presence penalty in [-2, 2]")
      ->capture_default_str();
  app.add_option("--frequency-penalty", args.sampling.frequency_penalty, "OpenAI frequency penalty in [-2, 2]")
      ->capture_default_str();
  add_seed_option(app, args.sampling.seed, args.seed_given);
  app.add_option("--stop", args.stop, "Stop string (repeatable); it is not printed");
  app.add_flag("--ignore-eos", args.ignore_eos, "Keep generating past the end-of-sequence token");
}

LoadedModel load_model_for_cli(const ModelArgs& args) {
  ModelOptions options;
  options.threads = args.threads;
  options.gemm = args.gemm == "w8a8" ? GemmMode::W8A8 : args.gemm == "w8a16" ? GemmMode::W8A16 : GemmMode::W8A32;
  options.kv_dtype = args.kv_dtype == "bf16" ? DType::BF16 : DType::F32;
  options.attention = args.attention == "naive" ? AttentionMode::Naive : AttentionMode::Absorbed;
  options.redundant_experts = args.redundant_experts;
  options.micro_batches = args.micro_batches;
  options.rebalance_every = args.rebalance_every;
  const std::string dir = args.model_dir.empty() ? default_model_dir() : args.model_dir;
  LoadProgressBar bar(dir);
  try {
    LoadedModel loaded =
        load_model_dir(dir, options, [&](std::string_view stage, double f) { bar.stage(stage, f); });
    bar.finish();
    return loaded;
  } catch (const Error& e) {
    bar.finish();
    if (args.model_dir.empty() && e.context().file == dir)
      throw Error(e.message() + " (the default model; run `make demo` to create it, or pass -m DIR)", e.context());
    throw;
  }
}

GenerationRequest make_request(const RequestArgs& args, std::vector<int32_t> prompt, int64_t context_length,
                               int64_t default_max_tokens) {
  GenerationRequest r;
  r.sampling = args.sampling;
  if (!args.seed_given) r.sampling.seed = random_seed();
  r.max_tokens = resolve_max_tokens(args.max_tokens, default_max_tokens, static_cast<int64_t>(prompt.size()),
                                    context_length);
  r.prompt = std::move(prompt);
  r.stop = args.stop;
  r.ignore_eos = args.ignore_eos;
  return r;
}

}  // namespace deepmoe::tools
