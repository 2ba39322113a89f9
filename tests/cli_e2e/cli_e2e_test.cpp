// `deepmoe generate` and `deepmoe chat` as a user runs them: real binary, tiny random checkpoint (written once by
// the cli_e2e.make_tiny_model fixture), outputs checked against the library's own forward pass, and exit codes
// and messages for bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "cli_test_util.h"
#include "greedy_reference.h"
#include "runtime/executor.h"
#include "model/config.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace deepmoe {
namespace {

using namespace cli_test;

std::vector<int32_t> parse_ids(const std::string& line) {
  std::istringstream in(line);
  std::vector<int32_t> ids;
  int32_t id;
  while (in >> id) ids.push_back(id);
  return ids;
}

TEST(CliGenerate, SameSeedGivesIdenticalOutput) {
  const std::string args = "generate -m " + quote(kModel) + " -p 'Hello there' -n 10 --temperature 1 --ignore-eos";
  const CommandResult a = deepmoe(args + " --seed 7");
  const CommandResult b = deepmoe(args + " --seed 7");
  const CommandResult other = deepmoe(args + " --seed 8 --output ids");
  ASSERT_EQ(a.code, 0) << a.err;
  ASSERT_EQ(b.code, 0) << b.err;
  ASSERT_EQ(other.code, 0) << other.err;
  EXPECT_FALSE(a.out.empty());
  EXPECT_EQ(a.out, b.out);
  const std::vector<int32_t> other_ids = parse_ids(other.out);
  EXPECT_EQ(other_ids.size(), 10u);
  EXPECT_NE(reference().tokenizer().decode(other_ids), a.out);
  // No progress bar off a terminal; on stderr warnings (the model's weights are random) and one summary line, last,
  // with the counts and the seed.
  EXPECT_EQ(a.err.find('\033'), std::string::npos) << a.err;
  std::istringstream err_lines(a.err);
  std::vector<std::string> lines;
  for (std::string line; std::getline(err_lines, line);) lines.push_back(line);
  ASSERT_FALSE(lines.empty());
  for (size_t i = 0; i + 1 < lines.size(); ++i) EXPECT_TRUE(lines[i].starts_with("deepmoe: warning: ")) << a.err;
  EXPECT_TRUE(lines.back().starts_with("prompt ")) << a.err;
  EXPECT_NE(a.err.find("generated 10 tokens"), std::string::npos) << a.err;
  EXPECT_NE(a.err.find("seed 7"), std::string::npos) << a.err;
}

// --parallel N: N completions in one batch, completion i as `--seed <seed + i>` alone prints it (stop strings and
// EOS included), and the usage errors of combinations it does not support.
TEST(CliGenerate, ParallelCompletionsEqualEachSeedAlone) {
  const std::string args = "generate -m " + quote(kModel) + " -p 'Hello there' -n 12 --temperature 0.9 --top-k 50";
  const CommandResult together = deepmoe(args + " --seed 11 --parallel 4 --output ids");
  ASSERT_EQ(together.code, 0) << together.err;
  std::istringstream lines(together.out);
  std::vector<std::string> got;
  for (std::string line; std::getline(lines, line);) got.push_back(line);
  ASSERT_EQ(got.size(), 4u) << together.out;
  for (int i = 0; i < 4; ++i) {
    const CommandResult alone = deepmoe(args + " --seed " + std::to_string(11 + i) + " --output ids");
    ASSERT_EQ(alone.code, 0) << alone.err;
    EXPECT_EQ(got[size_t(i)] + "\n", alone.out) << "completion " << i;
  }
  EXPECT_NE(together.err.find("4 completions"), std::string::npos) << together.err;
  const CommandResult text = deepmoe(args + " --seed 11 --parallel 2");
  ASSERT_EQ(text.code, 0) << text.err;
  EXPECT_EQ(text.out.rfind("=== completion 0 (seed 11, ", 0), 0u) << text.out;
  EXPECT_NE(text.out.find("=== completion 1 (seed 12, "), std::string::npos) << text.out;
  EXPECT_EQ(deepmoe(args + " --parallel 2 --output json").code, 2);
  EXPECT_EQ(deepmoe(args + " --parallel 0").code, 2);
}

TEST(CliGenerate, GreedyEqualsLibraryArgmaxStepByStep) {
  const std::string prompt = "The capital of France is";
  const CommandResult r = deepmoe("generate -m " + quote(kModel) + " -p " + quote(prompt) +
                                  " -n 8 --temperature 0 --ignore-eos --output ids");
  ASSERT_EQ(r.code, 0) << r.err;
  const Reference& ref = reference();
  EXPECT_EQ(parse_ids(r.out), ref.greedy(ref.tokenizer().encode(prompt, true, true), 8));
}

// --logprobs 3 (greedy): each JSON line's token, log-probability and top-3 alternatives equal the log-softmax
// of the library's logits at that step, computed here in double.
TEST(CliGenerate, LogprobsMatchTheModelsLogits) {
  const std::string prompt = "The capital of France is";
  const int steps = 4, top_n = 3;
  const CommandResult r = deepmoe("generate -m " + quote(kModel) + " -p " + quote(prompt) + " -n " +
                                  std::to_string(steps) + " --temperature 0 --ignore-eos --logprobs 3");
  ASSERT_EQ(r.code, 0) << r.err;
  std::vector<nlohmann::json> lines;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), size_t(steps)) << r.out;

  const Reference& ref = reference();
  ExecutorOptions options;
  options.gemm = cli_default_gemm();
  auto model = Executor::load(kModel, options);
  auto seq = model->create_sequence();
  std::vector<int32_t> feed = ref.tokenizer().encode(prompt, true, true);
  for (int step = 0; step < steps; ++step) {
    const Tensor t = model->forward({SequenceInput::last(seq.get(), feed)});
    const float* logits = t.data<float>();
    const int64_t vocab = t.numel();
    double max_logit = logits[0];
    for (int64_t i = 1; i < vocab; ++i) max_logit = std::max(max_logit, double(logits[i]));
    double z = 0;
    for (int64_t i = 0; i < vocab; ++i) z += std::exp(double(logits[i]) - max_logit);
    const double log_z = max_logit + std::log(z);
    std::vector<int32_t> order(static_cast<size_t>(vocab));
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + top_n, order.end(),
                      [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
    const nlohmann::json& j = lines[size_t(step)];
    ASSERT_EQ(j["token"].get<int32_t>(), order[0]) << "step " << step;  // greedy: the argmax
    EXPECT_NEAR(j["logprob"].get<double>(), double(logits[order[0]]) - log_z, 1e-9);
    EXPECT_EQ(j["text"].get<std::string>(), ref.tokenizer().decode(std::vector<int32_t>{order[0]}));
    ASSERT_EQ(j["top_logprobs"].size(), size_t(top_n));
    for (int k = 0; k < top_n; ++k) {
      EXPECT_EQ(j["top_logprobs"][k]["token"].get<int32_t>(), order[size_t(k)]) << "step " << step << " k " << k;
      EXPECT_NEAR(j["top_logprobs"][k]["logprob"].get<double>(), double(logits[order[size_t(k)]]) - log_z, 1e-9);
    }
    feed = {order[0]};
  }
  // --logprobs prints JSON: other output forms are a usage error; the count is bounded.
  EXPECT_EQ(deepmoe("generate -m " + quote(kModel) + " -p hi -n 2 --logprobs 2 --output ids").code, 2);
  EXPECT_EQ(deepmoe("generate -m " + quote(kModel) + " -p hi -n 2 --logprobs 21").code, 2);
  EXPECT_EQ(deepmoe("generate -m " + quote(kModel) + " -p hi -n 2 --logprobs -1").code, 2);
  // --output json without --logprobs: the tokens only.
  const CommandResult plain = deepmoe("generate -m " + quote(kModel) + " -p hi -n 2 --temperature 0 --output json");
  ASSERT_EQ(plain.code, 0) << plain.err;
  const auto first = nlohmann::json::parse(plain.out.substr(0, plain.out.find('\n')));
  EXPECT_TRUE(first.contains("token"));
  EXPECT_FALSE(first.contains("logprob"));
}

TEST(CliGenerate, StopStringCutsTheOutput) {
  const std::string base = "generate -m " + quote(kModel) + " -p 'Once upon a time' -n 16 --temperature 0 --ignore-eos";
  const CommandResult full = deepmoe(base);
  ASSERT_EQ(full.code, 0) << full.err;
  const std::string& text = full.out;
  // A two-character stop string from the middle of the greedy output, cut on UTF-8 character boundaries.
  std::vector<size_t> starts;
  for (size_t i = 0; i < text.size(); ++i)
    if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) starts.push_back(i);
  starts.push_back(text.size());
  ASSERT_GE(starts.size(), 6u) << "greedy output too short: '" << text << "'";
  const size_t k = starts.size() / 2;
  const std::string stop = text.substr(starts[k], starts[k + 2] - starts[k]);
  const CommandResult cut = deepmoe(base + " --stop " + quote(stop));
  ASSERT_EQ(cut.code, 0) << cut.err;
  EXPECT_EQ(cut.out, text.substr(0, text.find(stop)));
  EXPECT_NE(cut.err.find("finish stop"), std::string::npos) << cut.err;
}

TEST(CliGenerate, ChatFlagAppliesTheTemplate) {
  const CommandResult r = deepmoe("generate -m " + quote(kModel) + " --chat -p 'Hi!' -n 6 --temperature 0 --ignore-eos");
  ASSERT_EQ(r.code, 0) << r.err;
  const ChatTemplate tmpl = ChatTemplate::from_tokenizer_config(kModel);
  const std::vector<ChatMessage> messages = {{"user", "Hi!"}};
  const std::string rendered = tmpl.render(messages, true);
  EXPECT_EQ(r.out, reference().greedy_text(rendered, 6, /*add_special=*/false));
}

TEST(CliChat, PipedScriptKeepsHistoryAcrossTurns) {
  const CommandResult r = deepmoe("chat -m " + quote(kModel) + " -n 5 --temperature 0 --ignore-eos",
                                  "Hello\n\nHow are you?\n/exit\nnever read\n");
  ASSERT_EQ(r.code, 0) << r.err;
  const ChatTemplate tmpl = ChatTemplate::from_tokenizer_config(kModel);
  std::vector<ChatMessage> history = {{"user", "Hello"}};
  const std::string first = reference().greedy_text(tmpl.render(history, true), 5, false);
  history.push_back({"assistant", first});
  history.push_back({"user", "How are you?"});
  const std::string second = reference().greedy_text(tmpl.render(history, true), 5, false);
  EXPECT_EQ(r.out, first + "\n" + second + "\n");
}

// --context 40 with replies of 5 tokens: the third turn no longer fits with the first one in the history, so the
// first turn is dropped (the system prompt stays) and a notice goes to stderr; a message that cannot fit even
// alone is not sent, and the chat goes on.
TEST(CliChat, DropsOldestTurnsAtTheContextLimit) {
  const int64_t context = 40, reply = 5;
  const std::vector<std::string> inputs = {"Hello there, how are you doing today?",
                                           "Tell me something about the weather in Paris",
                                           "And what about London?",
                                           "one two three four five six seven eight nine ten eleven twelve "
                                           "thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty "
                                           "twenty-one twenty-two twenty-three twenty-four twenty-five twenty-six "
                                           "twenty-seven twenty-eight twenty-nine thirty",
                                           "ok"};
  std::string script;
  for (const auto& line : inputs) script += line + "\n";
  const CommandResult r = deepmoe("chat -m " + quote(kModel) + " --context 40 -n 5 --temperature 0 --ignore-eos " +
                                      "--system 'Be brief.'",
                                  script);
  ASSERT_EQ(r.code, 0) << r.err;

  // The same conversation replayed through the library: the history that fits, then greedy replies.
  const ChatTemplate tmpl = ChatTemplate::from_tokenizer_config(kModel);
  const Reference& ref = reference();
  std::vector<ChatMessage> history = {{"system", "Be brief."}};
  std::string expected_out;
  std::vector<size_t> dropped_per_turn;
  bool one_not_sent = false;
  for (const auto& input : inputs) {
    history.push_back({"user", input});
    auto tokens = [&] { return ref.tokenizer().encode(tmpl.render(history, true), false, true); };
    size_t dropped = 0;
    while (int64_t(tokens().size()) + reply > context && history.size() >= 4) {
      history.erase(history.begin() + 1, history.begin() + 3);
      ++dropped;
    }
    if (int64_t(tokens().size()) + reply > context) {
      history.pop_back();
      one_not_sent = true;
      continue;
    }
    dropped_per_turn.push_back(dropped);
    const std::string answer = ref.greedy_text(tmpl.render(history, true), int(reply), false);
    expected_out += answer + "\n";
    history.push_back({"assistant", answer});
  }
  // The scenario exercises what it is meant to: some turn dropped old turns, one message could not be sent.
  ASSERT_TRUE(one_not_sent);
  ASSERT_GT(*std::max_element(dropped_per_turn.begin(), dropped_per_turn.end()), 0u);
  EXPECT_EQ(r.out, expected_out);
  for (size_t d : dropped_per_turn)
    if (d > 0) {
      const std::string notice = "[dropped the oldest " + std::to_string(d) + " turn" + (d == 1 ? "" : "s") +
                                 " to fit the context of 40 tokens]";
      EXPECT_NE(r.err.find(notice), std::string::npos) << notice << "\n" << r.err;
    }
  EXPECT_NE(r.err.find("[message not sent:"), std::string::npos) << r.err;

  const CommandResult too_big = deepmoe("chat -m " + quote(kModel) + " --context 999999999", "hi\n");
  EXPECT_EQ(too_big.code, 1);
  EXPECT_NE(too_big.err.find("exceeds the model's context"), std::string::npos) << too_big.err;
  EXPECT_EQ(deepmoe("chat -m " + quote(kModel) + " --context 0", "hi\n").code, 2);
}

TEST(CliChat, EndOfInputEndsTheChat) {
  const CommandResult r = deepmoe("chat -m " + quote(kModel) + " -n 3 --temperature 0", "Hello\n");
  EXPECT_EQ(r.code, 0) << r.err;
  const CommandResult empty = deepmoe("chat -m " + quote(kModel) + " -n 3", "");
  EXPECT_EQ(empty.code, 0) << empty.err;
  EXPECT_EQ(empty.out, "");
}

TEST(CliChat, WorksOnAPseudoTerminal) {
  if (std::system("command -v script > /dev/null 2>&1") != 0) GTEST_SKIP() << "util-linux script not installed";
  // script gives the command a pseudo-terminal as stdin, stdout and stderr; the typed lines come from our pipe.
  const std::string inner = deepmoe_bin() + " chat -m " + quote(kModel) + " -n 4 --temperature 0 --ignore-eos";
  const CommandResult r = run_shell("script -qec " + quote(inner) + " /dev/null", "Hello\n/exit\n");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  const ChatTemplate tmpl = ChatTemplate::from_tokenizer_config(kModel);
  const std::vector<ChatMessage> messages = {{"user", "Hello"}};
  const std::string reply = reference().greedy_text(tmpl.render(messages, true), 4, false);
  EXPECT_NE(r.out.find("> "), std::string::npos) << r.out;  // the prompt is shown on a terminal
  EXPECT_NE(r.out.find("100% loaded"), std::string::npos) << r.out;  // and the loading progress bar
  // A terminal turns "\n" into "\r\n".
  std::string reply_on_tty;
  for (char c : reply) reply_on_tty += c == '\n' ? std::string("\r\n") : std::string(1, c);
  EXPECT_NE(r.out.find(reply_on_tty), std::string::npos) << r.out;
}

TEST(CliErrors, MissingModelFolder) {
  const CommandResult r = deepmoe("generate -m /nonexistent/deepmoe-model -p hi");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("deepmoe: error:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("/nonexistent/deepmoe-model"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("does not exist"), std::string::npos) << r.err;
  const CommandResult chat = deepmoe("chat -m /nonexistent/deepmoe-model", "hi\n");
  EXPECT_EQ(chat.code, 1);
  EXPECT_NE(chat.err.find("does not exist"), std::string::npos) << chat.err;
  // Without -m the default model is used; its absence says how to make it.
  const CommandResult dflt = run_shell("DEEPMOE_MODEL=/nonexistent/default " + deepmoe_bin() + " generate -p hi");
  EXPECT_EQ(dflt.code, 1);
  EXPECT_NE(dflt.err.find("make demo"), std::string::npos) << dflt.err;
}

TEST(CliErrors, MissingTokenizerFile) {
  const fs::path dir = scratch_dir();
  fs::copy_file(fs::path(kModel) / "config.json", dir / "config.json");
  const CommandResult r = deepmoe("generate -m " + quote(dir.string()) + " -p hi");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("tokenizer.json"), std::string::npos) << r.err;
  fs::remove_all(dir);
}

TEST(CliErrors, BadFlagsExitWithUsageError) {
  EXPECT_EQ(deepmoe("generate -m " + quote(kModel) + " -p hi --bogus").code, 2);
  EXPECT_EQ(deepmoe("generate -m " + quote(kModel)).code, 2);  // -p is required
  EXPECT_EQ(deepmoe("generate -p hi --gemm w4a4").code, 2);
  EXPECT_EQ(deepmoe("generate -p hi --temperature warm").code, 2);
  EXPECT_EQ(deepmoe("chat --bogus").code, 2);
}

// Out-of-range values are named by the flag the user typed, with the allowed range, in generate and chat alike.
TEST(CliErrors, BadValuesNameTheFlag) {
  const std::pair<std::string, std::string> cases[] = {
      {"--temperature -1", "--temperature: must be a finite number >= 0"},
      {"--top-p 0", "--top-p: must be in (0, 1]"},
      {"--top-p 1.5", "--top-p: must be in (0, 1]"},
      {"--top-k -3", "--top-k: must be >= 0"},
      {"--min-p 2", "--min-p: must be in [0, 1]"},
      {"--repeat-penalty 0", "--repeat-penalty: must be in (0, "},
      {"--repeat-last-n -2", "--repeat-last-n: "},
      {"--presence-penalty 3", "--presence-penalty: must be in [-2, 2]"},
      {"--frequency-penalty -9", "--frequency-penalty: must be in [-2, 2]"},
      {"--stop ''", "--stop: string 0 is empty"},
  };
  for (const std::string command : {"generate -p hi", "chat"}) {
    const std::string base = command + " -m " + quote(kModel) + " ";
    for (const auto& [flags, expected] : cases) {
      const CommandResult r = deepmoe(base + flags, "hi\n");
      EXPECT_EQ(r.code, 1) << command << " " << flags << ": " << r.err;
      EXPECT_NE(r.err.find("deepmoe: error: " + expected), std::string::npos) << command << " " << flags << ": "
                                                                               << r.err;
      EXPECT_EQ(r.err.find("field '"), std::string::npos) << command << " " << flags << ": " << r.err;
      EXPECT_TRUE(r.out.empty()) << flags;
    }
  }
}

}  // namespace
}  // namespace deepmoe
