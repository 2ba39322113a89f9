// Subcommand registration for the `deepmoe` tool: each cmd_<name>.cpp defines a static CommandRegistration
// that adds its CLI11 subcommand, so commands are independent files.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace deepmoe::tools {

struct CommandSpec {
  std::string name;
  std::string description;
  // Adds options to `sub` and sets its callback. The callback throws deepmoe::Error for user-facing errors;
  // main() turns them into "deepmoe: error: ..." and exit status 1.
  std::function<void(CLI::App& sub)> setup;
};

std::vector<CommandSpec>& command_registry();

struct CommandRegistration {
  explicit CommandRegistration(CommandSpec spec) { command_registry().push_back(std::move(spec)); }
};

// The model folder a command uses when -m is not given: $DEEPMOE_MODEL, else the bundled default model.
std::string default_model_dir();

}  // namespace deepmoe::tools
