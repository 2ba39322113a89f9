// Command-line options that `deepmoe generate` and `deepmoe chat` share: which model and how to run it, and the
// sampling / stop settings of a request. Value checks belong to the library (validate_request), so the CLI and
// the server reject the same values with the same message.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/generation_request.h"
#include "runtime/loaded_model.h"

namespace CLI {
class App;
}

namespace deepmoe::tools {

struct ModelArgs {
  std::string model_dir;  // empty: default_model_dir()
  int threads = 0;
  std::string gemm = "w8a32";
  std::string kv_dtype = "f32";
  std::string attention = "absorbed";
  int redundant_experts = 0;
  int micro_batches = 0;
  int rebalance_every = 0;
};

struct RequestArgs {
  SamplingParams sampling;
  bool seed_given = false;
  std::optional<int64_t> max_tokens;  // unset: the command's default, capped by the room left in the context
  std::vector<std::string> stop;
  bool ignore_eos = false;
};

void add_model_options(CLI::App& app, ModelArgs& args);
// default_temperature and default_max_tokens: --temperature and -n when not given; temperature_note: why this
// command's default temperature is what it is (for the help text).
void add_request_options(CLI::App& app, RequestArgs& args, double default_temperature, int64_t default_max_tokens,
                         const std::string& temperature_note);

// Loads the model (progress bar on a terminal only).
LoadedModel load_model_for_cli(const ModelArgs& args);

// A request for `prompt` from the options: a random seed when none was given (reported in the summary so the
// run can be repeated), max_tokens defaulting to default_max_tokens, -1 = the room left, never past the context
// (see max_tokens_option.h).
GenerationRequest make_request(const RequestArgs& args, std::vector<int32_t> prompt, int64_t context_length,
                               int64_t default_max_tokens);

}  // namespace deepmoe::tools
