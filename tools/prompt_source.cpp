#include "prompt_source.h"

#include <CLI/CLI.hpp>

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/error.h"
#include "core/mapped_file.h"

namespace deepmoe::tools {
namespace {

// Reads standard input to its end (a pipe, a redirected file or a terminal until Ctrl-D).
std::string read_standard_input() {
  if (isatty(STDIN_FILENO) == 1)
    std::fprintf(stderr, "deepmoe: reading the prompt from standard input; end it with Ctrl-D\n");
  std::string text;
  char buf[1 << 16];
  while (true) {
    const ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(std::string("cannot read the prompt from standard input: ") + std::strerror(errno));
    }
    if (n == 0) break;
    text.append(buf, size_t(n));
  }
  return text;
}

}  // namespace

void add_prompt_options(CLI::App& app, PromptArgs& args) {
  auto* prompt = app.add_option("-p,--prompt", args.text,
                                "Prompt text (special tokens are recognized); - reads it from standard input");
  auto* file = app.add_option("-f,--file", args.file, "Read the prompt from a file (one final newline is dropped)");
  prompt->excludes(file);
  file->excludes(prompt);
}

std::string drop_final_newline(std::string text) {
  if (!text.empty() && text.back() == '\n') {
    text.pop_back();
    if (!text.empty() && text.back() == '\r') text.pop_back();
  }
  return text;
}

std::string read_prompt(const PromptArgs& args) {
  if (!args.file.empty()) return drop_final_newline(read_text_file(args.file));
  if (!args.text) throw CLI::RequiredError("a prompt (-p TEXT, -p - for standard input, or -f FILE)");
  if (*args.text == "-") return drop_final_newline(read_standard_input());
  return *args.text;
}

}  // namespace deepmoe::tools
