#include "generation_options.h"

#include <CLI/CLI.hpp>

#include "max_tokens_option.h"
#include "seed_option.h"

namespace deepmoe::tools {

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
