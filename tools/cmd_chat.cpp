// `deepmoe chat`: an interactive conversation. Each user line is added to the history, the whole history is
// rendered with the model's chat template and the reply streams to stdout; the KV cache of the previous turns
// is reused (the rendered history only grows, so only the new turn is prefilled). "/exit", "/quit" or end of
// input (Ctrl-D) end it; "/reset" starts a new conversation. Works on a terminal and with stdin piped.
#include <CLI/CLI.hpp>

#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "command.h"
#include "generation_options.h"
#include "runtime/generator.h"
#include "tokenizer/chat_template.h"

namespace deepmoe::tools {
namespace {

struct ChatArgs {
  ModelArgs model;
  RequestArgs request;
  std::string system;
  bool stats = false;
};

std::string trim(const std::string& s) {
  const size_t begin = s.find_first_not_of(" \t\r\n");
  if (begin == std::string::npos) return {};
  const size_t end = s.find_last_not_of(" \t\r\n");
  return s.substr(begin, end - begin + 1);
}

void run_chat(const ChatArgs& args) {
  if (auto e = validate(args.request.sampling)) throw *e;
  if (auto e = validate_stop_strings(args.request.stop)) throw *e;
  LoadedModel loaded = load_model_for_cli(args.model);
  const ChatTemplate chat_template = ChatTemplate::from_tokenizer_config(loaded.dir);
  Generator generator(*loaded.lm, *loaded.tokenizer);
  auto sequence = loaded.lm->new_sequence();

  const bool interactive = isatty(fileno(stdin)) == 1 && isatty(fileno(stdout)) == 1;
  std::vector<ChatMessage> history;
  if (!args.system.empty()) history.push_back({"system", args.system});
  const size_t base_messages = history.size();
  if (interactive)
    std::fprintf(stderr, "chatting with %s — /exit or Ctrl-D to end, /reset to start over\n", loaded.dir.c_str());

  std::string line;
  while (true) {
    if (interactive) {
      std::fputs("> ", stdout);
      std::fflush(stdout);
    }
    if (!std::getline(std::cin, line)) {
      if (interactive) std::fputc('\n', stdout);
      break;
    }
    const std::string input = trim(line);
    if (input.empty()) continue;
    if (input == "/exit" || input == "/quit") break;
    if (input == "/reset") {
      history.resize(base_messages);
      continue;
    }
    history.push_back({"user", input});
    const std::string rendered = chat_template.render(history, /*add_generation_prompt=*/true);
    std::vector<int32_t> prompt = loaded.tokenizer->encode(rendered, /*add_special=*/false, /*parse_special=*/true);
    GenerationRequest request = make_request(args.request, std::move(prompt), loaded.lm->context_length(), 512);
    auto state = generator.generate(std::move(request), *sequence, [](std::string_view piece) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    });
    std::fputc('\n', stdout);
    std::fflush(stdout);
    history.push_back({"assistant", state->text});
    if (args.stats) {
      const GenerationStats& s = state->stats;
      std::fprintf(stderr, "[prompt %lld tokens (%lld cached), generated %lld tokens, finish %s, %.2f tok/s]\n",
                   (long long)s.prompt_tokens, (long long)s.cached_prompt_tokens, (long long)s.generated_tokens,
                   finish_reason_name(state->finish), s.decode_tokens_per_second());
    }
  }
}

CommandRegistration registration{
    {"chat", "Interactive chat using the model's chat template (multi-turn; /exit or Ctrl-D ends)",
     [](CLI::App& sub) {
       auto args = std::make_shared<ChatArgs>();
       add_model_options(sub, args->model);
       sub.add_option("--system", args->system, "System prompt");
       add_request_options(sub, args->request, /*default_temperature=*/0.6);
       sub.add_flag("--stats", args->stats, "Print token counts and speed after each reply (stderr)");
       sub.callback([args] { run_chat(*args); });
     }}};

}  // namespace
}  // namespace deepmoe::tools
