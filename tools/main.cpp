#include <CLI/CLI.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "checked_output.h"
#include "command.h"
#include "core/error.h"
#include "core/warning.h"

namespace deepmoe::tools {

std::vector<CommandSpec>& command_registry() {
  static std::vector<CommandSpec> registry;
  return registry;
}

std::string default_model_dir() {
  if (const char* env = std::getenv("DEEPMOE_MODEL")) return env;
  return DEEPMOE_DEFAULT_MODEL_DIR;
}

}  // namespace deepmoe::tools

int main(int argc, char** argv) {
  using namespace deepmoe::tools;
  // Warnings start on a fresh line: on a terminal a progress bar may be drawn on the current one.
  const bool stderr_is_terminal = isatty(fileno(stderr)) == 1;
  deepmoe::set_warning_handler([stderr_is_terminal](std::string_view message) {
    std::fprintf(stderr, "%sdeepmoe: warning: %.*s\n", stderr_is_terminal ? "\r\033[2K" : "", int(message.size()),
                 message.data());
    std::fflush(stderr);
  });
  CLI::App app{"deepmoe — an engine for DeepSeek-V3-class mixture-of-experts models"};
  app.set_version_flag("--version", std::string("deepmoe ") + DEEPMOE_VERSION);
  app.require_subcommand(1);
  auto& registry = command_registry();
  std::sort(registry.begin(), registry.end(), [](auto& a, auto& b) { return a.name < b.name; });
  for (auto& spec : registry) spec.setup(*app.add_subcommand(spec.name, spec.description));
  try {
    app.parse(argc, argv);
    // Whatever a command printed must have reached its destination (a full disk is an error, not exit 0).
    flush_stdout();
  } catch (const CLI::ParseError& e) {
    // --help / --version exit 0; every wrong flag or value exits 2 (CLI11's own codes are 100+).
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const deepmoe::Error& e) {
    std::fprintf(stderr, "deepmoe: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "deepmoe: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
