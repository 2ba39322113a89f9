// Command-line options that `deepmoe generate`, `deepmoe chat` and `deepmoe serve` share: the sampling / stop
// settings of a request (which model and how to run it are engine_options.h's). Value checks belong to the library (validate_request), so the CLI and
// the server reject the same values with the same message.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/generation_request.h"

namespace CLI {
class App;
}

namespace deepmoe::tools {

struct RequestArgs {
  SamplingParams sampling;
  bool seed_given = false;
  std::optional<int64_t> max_tokens;  // unset: the command's default, capped by the room left in the context
  std::vector<std::string> stop;
  bool ignore_eos = false;
};

// default_temperature and default_max_tokens: --temperature and -n when not given; temperature_note: why this
// command's default temperature is what it is (for the help text).
void add_request_options(CLI::App& app, RequestArgs& args, double default_temperature, int64_t default_max_tokens,
                         const std::string& temperature_note);

// A request for `prompt` from the options: a random seed when none was given (reported in the summary so the
// run can be repeated), max_tokens defaulting to default_max_tokens, -1 = the room left, never past the context
// (see max_tokens_option.h).
GenerationRequest make_request(const RequestArgs& args, std::vector<int32_t> prompt, int64_t context_length,
                               int64_t default_max_tokens);

}  // namespace deepmoe::tools
