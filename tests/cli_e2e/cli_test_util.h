// Running the real `deepmoe` binary from the e2e tests: through sh, stdin from a string, stdout and stderr
// captured separately, exit status decoded; the tiny model is the one the cli_e2e.make_tiny_model fixture writes.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "kernels/gemm.h"

namespace deepmoe::cli_test {

namespace fs = std::filesystem;

inline const std::string kModel = CLI_E2E_MODEL_DIR;

// What `--gemm auto`, the commands' default, means on one process: w8a16 where this CPU runs the BF16 dot product,
// w8a32 elsewhere. The library's own default stays w8a32, so a test comparing a command's default output with a
// library forward asks the library for this mode.
inline GemmMode cli_default_gemm() {
  return gemm_uses_bf16_dot(GemmMode::W8A16, DType::F8_E4M3) ? GemmMode::W8A16 : GemmMode::W8A32;
}

struct CommandResult {
  int code = -1;
  std::string out, err;
};

inline std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

inline std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

inline fs::path scratch_dir() {
  static std::atomic<int> counter{0};
  fs::path dir = fs::path(::testing::TempDir()) /
                 ("deepmoe_cli_e2e_" + std::to_string(getpid()) + "_" + std::to_string(counter++));
  fs::create_directories(dir);
  return dir;
}

// Runs `prefix deepmoe args` through sh with stdin from `input`; prefix may set environment variables or wrap
// the command.
inline CommandResult run_shell(const std::string& command, const std::string& input = "") {
  const fs::path dir = scratch_dir();
  std::ofstream(dir / "in", std::ios::binary) << input;
  const std::string full = command + " < " + quote((dir / "in").string()) + " > " + quote((dir / "out").string()) +
                           " 2> " + quote((dir / "err").string());
  const int status = std::system(full.c_str());
  CommandResult r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_file(dir / "out");
  r.err = read_file(dir / "err");
  fs::remove_all(dir);
  return r;
}

inline std::string deepmoe_bin() { return quote(DEEPMOE_BINARY_DIR "/tools/deepmoe"); }

inline CommandResult deepmoe(const std::string& args, const std::string& input = "") {
  return run_shell(deepmoe_bin() + " " + args, input);
}

}  // namespace deepmoe::cli_test
