// `deepmoe generate`: one prompt in, streamed text out (stdout), a one-line summary on stderr. With --output json
// (implied by --logprobs N) it prints one JSON object per generated token instead: the token, its text, and with
// --logprobs its log-probability and the N most likely alternatives.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "checked_output.h"
#include "command.h"
#include "engine_options.h"
#include "flag_errors.h"
#include "generation_options.h"
#include "prompt_source.h"
#include "grammar_options.h"
#include "speculative_options.h"
#include "runtime/batch_scheduler.h"
#include "runtime/generator.h"
#include "tokenizer/chat_template.h"

namespace deepmoe::tools {
namespace {

struct GenerateArgs {
  EngineArgs engine;
  RequestArgs request;
  SpeculativeArgs speculative;
  PromptArgs prompt;
  GrammarArgs grammar;
  bool chat = false;
  std::string system;
  std::string output = "text";
  bool output_given = false;
  std::optional<int64_t> logprobs;  // --logprobs N
  int64_t parallel = 1;             // --parallel N
};

// One generated token as a JSON object: its id, its text (lossy UTF-8: a token may hold part of a character) and
// raw bytes, and when logprobs were asked for, its log-probability and the top alternatives.
nlohmann::ordered_json token_json(const Tokenizer& tokenizer, int32_t id) {
  nlohmann::ordered_json j;
  j["token"] = id;
  j["text"] = tokenizer.decode(std::vector<int32_t>{id});
  const std::string& bytes = tokenizer.token_bytes(id);
  j["bytes"] = std::vector<uint8_t>(bytes.begin(), bytes.end());
  return j;
}

void print_json_tokens(const RequestState& state, const Tokenizer& tokenizer, bool with_logprobs) {
  for (const SampledToken& t : state.tokens) {
    nlohmann::ordered_json j = token_json(tokenizer, t.token);
    if (with_logprobs) {
      j["logprob"] = t.logprob;
      nlohmann::ordered_json top = nlohmann::ordered_json::array();
      for (const TokenLogprob& alt : t.top) {
        nlohmann::ordered_json a = token_json(tokenizer, alt.token);
        a["logprob"] = alt.logprob;
        top.push_back(std::move(a));
      }
      j["top_logprobs"] = std::move(top);
    }
    write_stdout(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  }
}

void print_summary(const RequestState& state) {
  const GenerationStats& s = state.stats;
  std::fprintf(stderr,
               "prompt %lld tokens (%lld cached), generated %lld tokens, finish %s; prefill %.2f tok/s (%.3f s), "
               "decode %.2f tok/s (%.3f s)%s; seed %llu\n",
               (long long)s.prompt_tokens, (long long)s.cached_prompt_tokens, (long long)s.generated_tokens,
               finish_reason_name(state.finish), s.prefill_tokens_per_second(), s.prefill_seconds,
               s.decode_tokens_per_second(), s.decode_seconds, speculative_summary(s).c_str(),
               (unsigned long long)state.request.sampling.seed);
}

void generate_on_leader(const GenerateArgs& args, std::shared_ptr<const grammar::Grammar> grammar,
                        LoadedModel& loaded);

// --parallel N: N completions of the prompt as one batch (runtime/batch_scheduler.h), completion i sampled with
// seed + i, so each is what `generate --seed <seed + i>` prints alone (with the same --speculative options).
// Printed when all are done, in order.
void generate_parallel(const GenerateArgs& args, LoadedModel& loaded, GenerationRequest base) {
  struct Completion {
    std::vector<int32_t> tokens;
    std::string text;
    FinishReason finish = FinishReason::None;
    std::string error;
  };
  std::unique_ptr<MtpSpeculativeLm> mtp;
  if (args.speculative.mode == "mtp") mtp = std::make_unique<MtpSpeculativeLm>(*loaded.engine);
  Generator generator(mtp ? static_cast<CausalLm&>(*mtp) : *loaded.lm, *loaded.tokenizer);
  SchedulerOptions so;
  so.max_running = args.parallel;
  so.draft_tokens = mtp ? args.speculative.draft_tokens : 0;
  so.max_batch_tokens = std::max<int64_t>(512, args.parallel * (so.draft_tokens + 1));
  BatchScheduler scheduler(generator, so);
  std::vector<Completion> done(size_t(args.parallel));
  const uint64_t seed = base.sampling.seed;
  const int64_t prompt_tokens = int64_t(base.prompt.size());
  for (int64_t i = 0; i < args.parallel; ++i) {
    GenerationRequest r = base;
    r.sampling.seed = seed + uint64_t(i);
    try {
      scheduler.add(std::move(r), {}, [&done, i](const RequestState* s, bool, const std::string& error) {
        Completion& c = done[size_t(i)];
        c.error = error;
        if (!s) return;
        for (const SampledToken& t : s->tokens) c.tokens.push_back(t.token);
        c.text = s->text;
        c.finish = s->finish;
      });
    } catch (const Error& e) {
      throw flag_error(e);
    }
  }
  const auto t0 = std::chrono::steady_clock::now();
  while (!scheduler.idle()) scheduler.step();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  int64_t generated = 0;
  for (size_t i = 0; i < done.size(); ++i) {
    const Completion& c = done[i];
    if (!c.error.empty()) throw Error("completion " + std::to_string(i) + ": " + c.error);
    generated += int64_t(c.tokens.size());
    if (args.output == "ids") {
      std::string line;
      for (size_t k = 0; k < c.tokens.size(); ++k) line += (k ? " " : "") + std::to_string(c.tokens[k]);
      write_stdout(line + "\n");
    } else {
      write_stdout("=== completion " + std::to_string(i) + " (seed " + std::to_string(seed + i) + ", " +
                   finish_reason_name(c.finish) + ") ===\n" + c.text + "\n");
    }
  }
  flush_stdout();
  GenerationStats speculation;
  speculation.verify_steps = scheduler.speculation().verify_steps;
  speculation.draft_tokens = scheduler.speculation().draft_tokens;
  speculation.accepted_draft_tokens = scheduler.speculation().accepted_draft_tokens;
  std::fprintf(stderr,
               "%lld completions of a %lld-token prompt: generated %lld tokens in %.3f s (%.2f tok/s)%s; seeds "
               "%llu-%llu\n",
               (long long)args.parallel, (long long)prompt_tokens, (long long)generated, seconds,
               seconds > 0 ? double(generated) / seconds : 0.0, speculative_summary(speculation).c_str(),
               (unsigned long long)seed, (unsigned long long)(seed + uint64_t(args.parallel) - 1));
}

void run_generate(GenerateArgs args) {
  if (args.logprobs) {
    if (args.output_given && args.output != "json")
      throw CLI::ValidationError("--logprobs", "prints JSON lines: use it with --output json (or no --output)");
    args.output = "json";
    args.request.sampling.logprobs = true;
    args.request.sampling.top_logprobs = *args.logprobs;
  }
  if (args.parallel > 1) {
    if (args.output == "json")
      throw CLI::ValidationError("--parallel", "prints text or ids per completion; --output json and --logprobs "
                                               "stream one completion's tokens");
  }
  // Reject bad sampling values before spending time on loading (the same check runs again per request).
  if (auto e = validate(args.request.sampling)) throw flag_error(*e);
  if (auto e = validate_stop_strings(args.request.stop)) throw flag_error(*e);
  // Compiled on every rank before the load: a bad schema fails at once, the same way everywhere.
  auto grammar = compile_grammar_args(args.grammar);
  EngineJob job = open_engine_job(args.engine, /*with_tokenizer=*/true);
  run_engine_job(job, [&] { generate_on_leader(args, grammar, job.model); });
}

// Rank 0's part: everything a single process does.
void generate_on_leader(const GenerateArgs& args, std::shared_ptr<const grammar::Grammar> grammar,
                        LoadedModel& loaded) {
  const std::string prompt_text = read_prompt(args.prompt);  // a file or standard input: rank 0 reads it
  std::vector<int32_t> prompt;
  if (args.chat) {
    // The template writes BOS itself, so the tokenizer adds no special tokens of its own.
    std::vector<ChatMessage> messages;
    if (!args.system.empty()) messages.push_back({"system", args.system});
    messages.push_back({"user", prompt_text});
    const std::string rendered = ChatTemplate::from_tokenizer_config(loaded.dir).render(messages, /*add_generation_prompt=*/true);
    prompt = loaded.tokenizer->encode(rendered, /*add_special=*/false, /*parse_special=*/true);
  } else {
    prompt = loaded.tokenizer->encode(prompt_text, /*add_special=*/true, /*parse_special=*/true);
  }
  GenerationRequest request = make_request(args.request, std::move(prompt), loaded.lm->context_length(), 256);
  request.grammar = std::move(grammar);
  request.token_healing = args.grammar.token_healing;
  if (args.parallel > 1) {
    generate_parallel(args, loaded, std::move(request));
    return;
  }
  GenerationLoop generator(loaded, args.speculative);
  auto sequence = generator.new_sequence();
  const bool text = args.output == "text";
  std::unique_ptr<RequestState> state;
  try {
    state = generator.generate(std::move(request), *sequence, [&](std::string_view piece) {
      if (!text) return;
      // Checked per piece, so a full disk or closed pipe stops the generation at once.
      write_stdout(piece);
      flush_stdout();
    });
  } catch (const Error& e) {
    throw flag_error(e);  // a request check names the flag (or the prompt), not the API field
  }
  if (text) {
    if (is_user_terminal(stdout) && !state->text.empty() && state->text.back() != '\n') std::fputc('\n', stdout);
  } else if (args.output == "ids") {
    for (size_t i = 0; i < state->tokens.size(); ++i) std::printf("%s%d", i ? " " : "", state->tokens[i].token);
    std::printf("\n");
  } else {
    print_json_tokens(*state, *loaded.tokenizer, args.request.sampling.logprobs);
  }
  flush_stdout();  // a failed write is reported with its reason, and no summary follows it
  print_summary(*state);
}

CommandRegistration registration{
    {"generate", "Generate text from a prompt, streamed to stdout", [](CLI::App& sub) {
       auto args = std::make_shared<GenerateArgs>();
       add_engine_options(sub, args->engine);
       add_prompt_options(sub, args->prompt);
       auto* chat = sub.add_flag("--chat", args->chat, "Wrap the prompt as a user message in the model's chat template");
       sub.add_option("--system", args->system, "System prompt (with --chat)")->needs(chat);
       add_request_options(sub, args->request, /*default_temperature=*/0.2, /*default_max_tokens=*/256,
                           "generate defaults to 0.2, close to greedy, for focused completions; chat defaults to "
                           "0.6 for more varied replies");
       add_speculative_options(sub, args->speculative);
       add_grammar_options(sub, args->grammar);
       auto* output = sub.add_option("--output", args->output,
                                     "text: stream the text; ids: print the generated token ids (the ending EOS "
                                     "included); json: one line per generated token, {\"token\": id, \"text\": "
                                     "its text, \"bytes\": its raw bytes} plus, with --logprobs, \"logprob\" and "
                                     "\"top_logprobs\": [{token, text, bytes, logprob}, ...] most likely first")
                          ->check(CLI::IsMember({"text", "ids", "json"}))
                          ->capture_default_str();
       sub.add_option("--parallel", args->parallel,
                      "Generate N completions of the prompt together in one batch (completion i uses seed + i, as "
                      "`--seed <seed + i>` alone would); printed when all are done, each under a header line, or "
                      "one line of ids each with --output ids")
           ->check(CLI::Range(int64_t(1), int64_t(1024)))
           ->capture_default_str();
       sub.add_option("--logprobs", args->logprobs,
                      "Report each chosen token's log-probability and the N most likely alternatives (0-20), as "
                      "JSON lines (implies --output json). Log-probabilities are the model's own distribution "
                      "(log-softmax of the logits, before penalties and temperature)")
           ->check(CLI::Range(int64_t(0), int64_t(20)));
       sub.callback([args, output] {
         args->output_given = output->count() > 0;
         run_generate(*args);
       });
     }}};

}  // namespace
}  // namespace deepmoe::tools
