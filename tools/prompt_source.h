// Where the prompt of `deepmoe generate` comes from, as in llama.cpp: -p TEXT, -p - (standard input, for long
// prompts and pipes) or -f FILE. Exactly one is needed. Text read from standard input or a file loses one
// trailing newline ("\n" or "\r\n"), the one `echo` or an editor adds; the rest is the prompt byte for byte.
#pragma once

#include <optional>
#include <string>

namespace CLI {
class App;
}

namespace deepmoe::tools {

struct PromptArgs {
  std::optional<std::string> text;  // -p: the prompt (may be empty), or "-" for standard input
  std::string file;  // -f: a file holding the prompt
};

// Adds -p/--prompt and -f/--file (mutually exclusive).
void add_prompt_options(CLI::App& app, PromptArgs& args);

// The prompt text. Throws CLI::RequiredError when neither -p nor -f was given (a usage error), deepmoe::Error
// when the file or standard input cannot be read (naming the file, or "standard input").
std::string read_prompt(const PromptArgs& args);

// Removes one trailing "\n" or "\r\n".
std::string drop_final_newline(std::string text);

}  // namespace deepmoe::tools
