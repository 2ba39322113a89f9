// `deepmoe chat`: an interactive conversation. Each message is added to the history, the whole history is
// rendered with the model's chat template and the reply streams to stdout; the KV cache of the previous turns
// is reused (the rendered history only grows, so only the new turn is prefilled). When the conversation and the
// room for a reply would no longer fit the context, the oldest turns (a user message and its reply) are dropped,
// the system prompt kept, with a notice on stderr. Input, multi-line messages and the slash commands (/help,
// /reset, /save FILE, /exit) are read by chat_repl.h; Ctrl-C stops the reply being written, not the chat. Works
// on a terminal and with stdin piped.
#include <CLI/CLI.hpp>

#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include "chat_repl.h"
#include "checked_output.h"
#include "command.h"
#include "core/error.h"
#include "engine_options.h"
#include "flag_errors.h"
#include "generation_options.h"
#include "max_tokens_option.h"
#include "seed_option.h"
#include "grammar_options.h"
#include "speculative_options.h"
#include "runtime/generator.h"
#include "tokenizer/chat_template.h"

namespace deepmoe::tools {
namespace {

constexpr int64_t kDefaultReplyTokens = 512;

struct ChatArgs {
  EngineArgs engine;
  RequestArgs request;
  SpeculativeArgs speculative;
  GrammarArgs grammar;  // every reply constrained
  std::string system;
  int64_t context = 0;  // 0: the model's context length
  bool stats = false;
};

// Set by SIGINT while a reply is being written: Ctrl-C stops that reply, not the chat.
volatile std::sig_atomic_t g_reply_interrupted = 0;

void on_sigint(int) { g_reply_interrupted = 1; }

// Thrown from the text callback to stop the reply; the generator leaves the sequence's cache consistent (the
// next turn reuses the prefix the conversation still shares with it).
struct ReplyInterrupted {};

// While alive, Ctrl-C interrupts the current reply instead of ending the process.
class InterruptReplyOnSigint {
 public:
  InterruptReplyOnSigint() {
    g_reply_interrupted = 0;
    struct sigaction action {};
    action.sa_handler = on_sigint;
    action.sa_flags = SA_RESTART;  // a write to the terminal in progress completes rather than failing
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, &previous_);
  }
  ~InterruptReplyOnSigint() { sigaction(SIGINT, &previous_, nullptr); }

 private:
  struct sigaction previous_ {};
};

// The conversation as JSON messages, the form `deepmoe template` and OpenAI's API read.
void save_transcript(const std::string& path, const std::vector<ChatMessage>& history) {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  for (const ChatMessage& m : history) {
    nlohmann::ordered_json message;
    message["role"] = m.role;
    message["content"] = m.content.value_or("");
    messages.push_back(std::move(message));
  }
  const std::string text = messages.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw Error(std::string("cannot create: ") + std::strerror(errno), {path, "", ""});
  const bool written = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  const int write_errno = errno;
  const bool closed = std::fclose(f) == 0;
  if (!written || !closed)
    throw Error(std::string("cannot write: ") + std::strerror(written ? errno : write_errno), {path, "", ""});
}

void chat_on_leader(ChatArgs args, const std::shared_ptr<const grammar::Grammar>& grammar, LoadedModel& loaded);

void run_chat(ChatArgs args) {
  if (auto e = validate(args.request.sampling)) throw flag_error(*e);
  if (auto e = validate_stop_strings(args.request.stop)) throw flag_error(*e);
  // Compiled on every rank before the load: a bad schema fails at once, the same way everywhere.
  const auto grammar = compile_grammar_args(args.grammar);
  EngineJob job = open_engine_job(args.engine, /*with_tokenizer=*/true);
  run_engine_job(job, [&] { chat_on_leader(args, grammar, job.model); });
}

// Rank 0's part: the whole conversation (the other ranks follow its steps).
void chat_on_leader(ChatArgs args, const std::shared_ptr<const grammar::Grammar>& grammar, LoadedModel& loaded) {
  const ChatTemplate chat_template = ChatTemplate::from_tokenizer_config(loaded.dir);
  GenerationLoop generator(loaded, args.speculative);
  auto sequence = generator.new_sequence();

  const bool interactive = is_user_terminal(stdin) && is_user_terminal(stdout);
  std::vector<ChatMessage> history;
  if (!args.system.empty()) history.push_back({"system", args.system});
  const size_t base_messages = history.size();
  const int64_t model_context = loaded.lm->context_length();
  if (args.context > model_context)
    throw Error("--context " + std::to_string(args.context) + " exceeds the model's context of " +
                std::to_string(model_context) + " tokens (max_position_embeddings in " + loaded.dir +
                "/config.json)");
  const int64_t context = args.context > 0 ? args.context : model_context;
  // Room kept for a reply: -n when given, else the default reply length (at most half the context).
  const int64_t reply_room = chat_reply_room(args.request.max_tokens, kDefaultReplyTokens, context);
  // One seed for the whole chat, reported when random, so that --seed repeats the conversation.
  if (!args.request.seed_given) {
    args.request.sampling.seed = random_seed();
    args.request.seed_given = true;
    std::fprintf(stderr, "deepmoe: random seed %llu (--seed %llu repeats the replies)\n",
                 (unsigned long long)args.request.sampling.seed, (unsigned long long)args.request.sampling.seed);
  }
  if (interactive)
    std::fprintf(stderr, "chatting with %s — /help for commands, Ctrl-C stops a reply, /exit or Ctrl-D ends\n",
                 loaded.dir.c_str());

  ChatLineReader reader(interactive);
  while (std::optional<ChatInput> input = reader.read()) {
    if (input->kind == ChatInput::Kind::Command) {
      const std::string& name = input->text;
      if (name == "exit" || name == "quit") break;
      if (name == "help") {
        std::fputs(chat_help_text(), stderr);
      } else if (name == "reset") {
        const size_t messages = history.size() - base_messages;
        if (interactive && messages > 0 && !reader.confirm("Forget the " + std::to_string(messages) +
                                                           " message(s) of this conversation?")) {
          std::fprintf(stderr, "[kept the conversation]\n");
          continue;
        }
        history.resize(base_messages);
        std::fprintf(stderr, "[new conversation: %zu message(s) forgotten%s]\n", messages,
                     base_messages ? ", the system prompt kept" : "");
      } else if (name == "save") {
        if (input->argument.empty()) {
          std::fprintf(stderr, "[/save needs a file name: /save FILE]\n");
          continue;
        }
        try {
          save_transcript(input->argument, history);
          std::fprintf(stderr, "[saved %zu message(s) to %s]\n", history.size(), input->argument.c_str());
        } catch (const Error& e) {
          std::fprintf(stderr, "[not saved: %s]\n", e.what());
        }
      } else {
        std::fprintf(stderr, "[unknown command /%s: /help lists the commands; start with // to send a message "
                             "that begins with /]\n",
                     name.c_str());
      }
      continue;
    }
    history.push_back({"user", input->text});
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
    request.grammar = grammar;
    request.token_healing = args.grammar.token_healing;
    std::string reply;
    std::unique_ptr<RequestState> state;
    {
      InterruptReplyOnSigint ctrl_c_stops_the_reply;
      try {
        state = generator.generate(std::move(request), *sequence, [&](std::string_view piece) {
          reply += piece;
          write_stdout(piece);
          flush_stdout();
          if (g_reply_interrupted) throw ReplyInterrupted{};
        });
      } catch (const ReplyInterrupted&) {
      }
    }
    write_stdout("\n");
    flush_stdout();
    if (!state) std::fprintf(stderr, "[reply stopped]\n");
    // An interrupted reply stays in the history as far as it was written, as the user saw it.
    history.push_back({"assistant", reply});
    if (args.stats && state) {
      const GenerationStats& s = state->stats;
      std::fprintf(stderr, "[prompt %lld tokens (%lld cached), generated %lld tokens, finish %s, %.2f tok/s%s]\n",
                   (long long)s.prompt_tokens, (long long)s.cached_prompt_tokens, (long long)s.generated_tokens,
                   finish_reason_name(state->finish), s.decode_tokens_per_second(), speculative_summary(s).c_str());
    }
  }
  if (interactive) std::fputc('\n', stdout);
}

CommandRegistration registration{
    {"chat", "Interactive chat using the model's chat template (multi-turn; /help lists the commands, /exit or "
             "Ctrl-D ends)",
     [](CLI::App& sub) {
       auto args = std::make_shared<ChatArgs>();
       add_engine_options(sub, args->engine);
       sub.add_option("--system", args->system, "System prompt");
       sub.add_option("--context", args->context,
                      "Tokens the conversation may hold (default and most: the model's context); when the "
                      "history and the room for a reply (-n, else up to 512) would not fit, the oldest turns are "
                      "dropped (the system prompt is kept) with a notice on stderr")
           ->check(CLI::PositiveNumber);
       add_request_options(sub, args->request, /*default_temperature=*/0.6, kDefaultReplyTokens,
                           "chat defaults to 0.6 for more varied replies; generate defaults to 0.2, close to "
                           "greedy, for focused completions");
       add_speculative_options(sub, args->speculative);
       add_grammar_options(sub, args->grammar);
       sub.add_flag("--stats", args->stats, "Print token counts and speed after each reply (stderr)");
       sub.callback([args] { run_chat(*args); });
     }}};

}  // namespace
}  // namespace deepmoe::tools
