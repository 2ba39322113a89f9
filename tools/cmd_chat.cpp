// `deepmoe chat`: an interactive conversation. Each user line is added to the history, the whole history is
// rendered with the model's chat template and the reply streams to stdout; the KV cache of the previous turns
// is reused (the rendered history only grows, so only the new turn is prefilled). When the conversation and the
// room for a reply would no longer fit the context, the oldest turns (a user message and its reply) are dropped,
// the system prompt kept, with a notice on stderr (issue 5). "/exit", "/quit" or end of input (Ctrl-D) end it;
// "/reset" starts a new conversation. Works on a terminal and with stdin piped.
#include <CLI/CLI.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "command.h"
#include "core/error.h"
#include "generation_options.h"
#include "speculative_options.h"
#include "runtime/generator.h"
#include "tokenizer/chat_template.h"

namespace deepmoe::tools {
namespace {

constexpr int64_t kDefaultReplyTokens = 512;

struct ChatArgs {
  ModelArgs model;
  RequestArgs request;
  SpeculativeArgs speculative;
  std::string system;
  int64_t context = 0;  // 0: the model's context length
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
  GenerationLoop generator(loaded, args.speculative);
  auto sequence = generator.new_sequence();

  const bool interactive = isatty(fileno(stdin)) == 1 && isatty(fileno(stdout)) == 1;
  std::vector<ChatMessage> history;
  if (!args.system.empty()) history.push_back({"system", args.system});
  const size_t base_messages = history.size();
  const int64_t model_context = loaded.lm->context_length();
  if (args.context > model_context)
    throw Error("--context " + std::to_string(args.context) + " exceeds the model's context of " +
                    std::to_string(model_context) + " tokens",
                {loaded.dir, "", "max_position_embeddings"});
  const int64_t context = args.context > 0 ? args.context : model_context;
  // Room kept for a reply: -n when given, else the default reply length (at most half the context).
  const int64_t reply_room =
      args.request.max_tokens ? *args.request.max_tokens : std::min<int64_t>(kDefaultReplyTokens, context / 2);
  if (reply_room >= context)
    throw Error("-n " + std::to_string(reply_room) + " leaves no room for a prompt in the context of " +
                std::to_string(context) + " tokens");
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
    auto encode = [&] {
      const std::string rendered = chat_template.render(history, /*add_generation_prompt=*/true);
      return loaded.tokenizer->encode(rendered, /*add_special=*/false, /*parse_special=*/true);
    };
    std::vector<int32_t> prompt = encode();
    // Drop the oldest turns until the prompt leaves room for a reply; the newest message always stays.
    size_t dropped = 0;
    while (int64_t(prompt.size()) + reply_room > context && history.size() >= base_messages + 3) {
      const auto oldest = history.begin() + std::ptrdiff_t(base_messages);
      history.erase(oldest, oldest + 2);  // a user message and its reply
      ++dropped;
      prompt = encode();
    }
    if (dropped > 0)
      std::fprintf(stderr, "[dropped the oldest %zu turn%s to fit the context of %lld tokens]\n", dropped,
                   dropped == 1 ? "" : "s", (long long)context);
    if (int64_t(prompt.size()) + reply_room > context) {
      std::fprintf(stderr, "[message not sent: %zu prompt tokens and %lld for the reply exceed the context of %lld]\n",
                   prompt.size(), (long long)reply_room, (long long)context);
      history.pop_back();
      continue;
    }
    GenerationRequest request = make_request(args.request, std::move(prompt), context, kDefaultReplyTokens);
    auto state = generator.generate(std::move(request), *sequence, [](std::string_view piece) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    });
    std::fputc('\n', stdout);
    std::fflush(stdout);
    history.push_back({"assistant", state->text});
    if (args.stats) {
      const GenerationStats& s = state->stats;
      std::fprintf(stderr, "[prompt %lld tokens (%lld cached), generated %lld tokens, finish %s, %.2f tok/s%s]\n",
                   (long long)s.prompt_tokens, (long long)s.cached_prompt_tokens, (long long)s.generated_tokens,
                   finish_reason_name(state->finish), s.decode_tokens_per_second(), speculative_summary(s).c_str());
    }
  }
}

CommandRegistration registration{
    {"chat", "Interactive chat using the model's chat template (multi-turn; /exit or Ctrl-D ends)",
     [](CLI::App& sub) {
       auto args = std::make_shared<ChatArgs>();
       add_model_options(sub, args->model);
       sub.add_option("--system", args->system, "System prompt");
       sub.add_option("--context", args->context,
                      "Tokens the conversation may hold (default: the model's max_position_embeddings); when the "
                      "history and the room for a reply (-n, else up to 512) would not fit, the oldest turns are "
                      "dropped (the system prompt is kept) with a notice on stderr")
           ->check(CLI::PositiveNumber);
       add_request_options(sub, args->request, /*default_temperature=*/0.6);
       add_speculative_options(sub, args->speculative);
       sub.add_flag("--stats", args->stats, "Print token counts and speed after each reply (stderr)");
       sub.callback([args] { run_chat(*args); });
     }}};

}  // namespace
}  // namespace deepmoe::tools
