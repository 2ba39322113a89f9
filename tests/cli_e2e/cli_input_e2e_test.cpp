// How `deepmoe generate` and `chat` take their input, as llama.cpp users expect: the prompt from -p, from
// standard input (-p -) or from a file (-f); --seed -1 for a random seed that is reported and repeats the run;
// -n -1 for "until the end of the sequence or the context", and an -n past the context clamped with one notice;
// usage errors that name the flag and what it accepts.
#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <string>

#include "cli_test_util.h"

namespace deepmoe {
namespace {

using namespace cli_test;

size_t count(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos; at = haystack.find(needle, at + 1)) ++n;
  return n;
}

size_t words(const std::string& line) {
  size_t n = 0;
  bool in_word = false;
  for (char c : line) {
    const bool space = c == ' ' || c == '\n';
    if (!space && !in_word) ++n;
    in_word = !space;
  }
  return n;
}

// The tiny model with its context cut to `context` tokens (the weights are linked, not copied).
fs::path small_context_model(int context) {
  const fs::path dir = scratch_dir();
  for (const char* name : {"model.safetensors", "tokenizer.json", "tokenizer_config.json"})
    fs::create_symlink(fs::path(kModel) / name, dir / name);
  std::string config = read_file(fs::path(kModel) / "config.json");
  const std::string key = "\"max_position_embeddings\": ";
  const size_t at = config.find(key);
  EXPECT_NE(at, std::string::npos);
  const size_t end = config.find_first_of(",\n", at + key.size());
  config.replace(at + key.size(), end - at - key.size(), std::to_string(context));
  std::ofstream(dir / "config.json") << config;
  return dir;
}

TEST(CliInput, PromptFromStandardInputOrAFileEqualsTheFlag) {
  const std::string base = "generate -m " + quote(kModel) + " -n 6 --temperature 0 --output ids ";
  const CommandResult flag = deepmoe(base + "-p 'The tide turns'");
  ASSERT_EQ(flag.code, 0) << flag.err;
  ASSERT_EQ(words(flag.out), 6u) << flag.out;
  // echo's newline (and a file's final newline, \n or \r\n) is not part of the prompt.
  const CommandResult piped = deepmoe(base + "-p -", "The tide turns\n");
  EXPECT_EQ(piped.code, 0) << piped.err;
  EXPECT_EQ(piped.out, flag.out);
  const fs::path dir = scratch_dir();
  std::ofstream(dir / "prompt.txt", std::ios::binary) << "The tide turns\r\n";
  const CommandResult file = deepmoe(base + "-f " + quote((dir / "prompt.txt").string()));
  EXPECT_EQ(file.code, 0) << file.err;
  EXPECT_EQ(file.out, flag.out);
  const CommandResult long_flag = deepmoe(base + "--file " + quote((dir / "prompt.txt").string()));
  EXPECT_EQ(long_flag.out, flag.out);
  // Only one final newline goes: a prompt that ends in a blank line keeps the other one.
  std::ofstream(dir / "two.txt", std::ios::binary) << "The tide turns\n\n";
  const CommandResult two = deepmoe(base + "-f " + quote((dir / "two.txt").string()));
  const CommandResult two_flag = deepmoe(base + "-p 'The tide turns\n'");
  EXPECT_EQ(two.out, two_flag.out);

  // -p and -f together, or neither, are usage errors.
  const CommandResult both = deepmoe(base + "-p hi -f " + quote((dir / "prompt.txt").string()));
  EXPECT_EQ(both.code, 2) << both.err;
  EXPECT_NE(both.err.find("excludes"), std::string::npos) << both.err;
  const CommandResult none = deepmoe(base);
  EXPECT_EQ(none.code, 2) << none.err;
  EXPECT_NE(none.err.find("-p TEXT, -p - for standard input, or -f FILE"), std::string::npos) << none.err;
  // A missing file or a folder is named.
  const CommandResult missing = deepmoe(base + "-f " + quote((dir / "nope.txt").string()));
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.err.find((dir / "nope.txt").string() + ": cannot open: No such file"), std::string::npos)
      << missing.err;
  const CommandResult folder = deepmoe(base + "-f " + quote(dir.string()));
  EXPECT_EQ(folder.code, 1);
  EXPECT_NE(folder.err.find("is a directory, not a file"), std::string::npos) << folder.err;
  // An empty -p is a prompt (BOS only), not a missing one.
  EXPECT_EQ(deepmoe(base + "-p ''").code, 0);
  fs::remove_all(dir);
}

// Prompts longer than a shell argument can hold come through -f and -p -; past the context they are refused
// with the count.
TEST(CliInput, LongPromptsThroughAFileOrAPipe) {
  const fs::path model = small_context_model(16);
  std::string text;
  while (text.size() < 200000) text += "Now is the winter of our discontent made glorious summer. ";
  const fs::path file = model / "long.txt";
  std::ofstream(file) << text;
  for (const std::string source : {"-f " + quote(file.string()), std::string("-p -")}) {
    const CommandResult r = deepmoe("generate -m " + quote(model.string()) + " " + source, text);
    EXPECT_EQ(r.code, 1) << source;
    EXPECT_NE(r.err.find("deepmoe: error: the prompt has "), std::string::npos) << source << ": " << r.err;
    EXPECT_NE(r.err.find("the model's context length is 16 tokens"), std::string::npos) << r.err;
  }
  fs::remove_all(model);
}

uint64_t reported_seed(const std::string& err) {
  std::smatch m;
  EXPECT_TRUE(std::regex_search(err, m, std::regex("seed ([0-9]+)"))) << err;
  return m.empty() ? 0 : std::stoull(m[1]);
}

TEST(CliInput, SeedMinusOneIsRandomReportedAndRepeatable) {
  const std::string base = "generate -m " + quote(kModel) + " -p 'Once upon' -n 8 --temperature 1.5 --output ids ";
  const CommandResult a = deepmoe(base + "--seed -1");
  const CommandResult b = deepmoe(base);  // -1 is the default
  ASSERT_EQ(a.code, 0) << a.err;
  ASSERT_EQ(b.code, 0) << b.err;
  const uint64_t seed_a = reported_seed(a.err), seed_b = reported_seed(b.err);
  EXPECT_NE(seed_a, seed_b);
  EXPECT_NE(seed_a, 18446744073709551615ull);  // -1 is not read as 2^64 - 1
  // The reported seed repeats the run.
  const CommandResult again = deepmoe(base + "--seed " + std::to_string(seed_a));
  EXPECT_EQ(again.out, a.out);
  EXPECT_EQ(reported_seed(again.err), seed_a);
  // The whole unsigned 64-bit range is accepted; anything else names --seed and the range.
  const CommandResult top = deepmoe(base + "--seed 18446744073709551615");
  EXPECT_EQ(top.code, 0) << top.err;
  EXPECT_EQ(reported_seed(top.err), 18446744073709551615ull);
  for (const std::string bad : {"-2", "18446744073709551616", "1x", "''", "+5"}) {
    const CommandResult r = deepmoe(base + "--seed " + bad);
    EXPECT_EQ(r.code, 2) << bad << ": " << r.err;
    EXPECT_NE(r.err.find("--seed: must be -1 (a random seed) or a whole number from 0 to 18446744073709551615"),
              std::string::npos)
        << bad << ": " << r.err;
  }
  // chat picks one seed for the conversation and says which.
  const CommandResult chat = deepmoe("chat -m " + quote(kModel) + " -n 4 --temperature 1.5", "hi\nagain\n");
  ASSERT_EQ(chat.code, 0) << chat.err;
  const uint64_t chat_seed = reported_seed(chat.err);
  EXPECT_EQ(count(chat.err, "random seed "), 1u) << chat.err;
  const CommandResult chat_again =
      deepmoe("chat -m " + quote(kModel) + " -n 4 --temperature 1.5 --seed " + std::to_string(chat_seed),
              "hi\nagain\n");
  EXPECT_EQ(chat_again.out, chat.out);
  EXPECT_EQ(chat_again.err.find("random seed"), std::string::npos) << chat_again.err;
}

TEST(CliInput, MaxTokensMinusOneAndPastTheContext) {
  const fs::path model = small_context_model(16);
  const std::string base = "generate -m " + quote(model.string()) + " -p 'hello world' --temperature 0 "
                           "--ignore-eos --output ids ";
  // -1: up to the end of the context (--ignore-eos keeps going past an end-of-sequence token).
  const CommandResult all = deepmoe(base + "-n -1");
  ASSERT_EQ(all.code, 0) << all.err;
  EXPECT_NE(all.err.find("finish length"), std::string::npos) << all.err;
  const size_t generated = words(all.out);
  EXPECT_GT(generated, 8u);
  EXPECT_NE(all.err.find("generated " + std::to_string(generated) + " tokens"), std::string::npos) << all.err;
  EXPECT_EQ(all.err.find("more than fits"), std::string::npos) << all.err;
  // Over the context: the same tokens, with one notice.
  const CommandResult over = deepmoe(base + "-n 50");
  ASSERT_EQ(over.code, 0) << over.err;
  EXPECT_EQ(over.out, all.out);
  EXPECT_EQ(count(over.err, "deepmoe: -n 50 is more than fits: the context of 16 tokens leaves " +
                                std::to_string(generated) + " after the"),
            1u)
      << over.err;
  // Within the context: exactly -n.
  const CommandResult three = deepmoe(base + "-n 3");
  EXPECT_EQ(words(three.out), 3u) << three.out;
  // 0, other negatives and non-numbers are usage errors naming the flag and what it takes.
  for (const std::string bad : {"0", "-2", "ten", "1.5"}) {
    const CommandResult r = deepmoe(base + "-n " + bad);
    EXPECT_EQ(r.code, 2) << bad << ": " << r.err;
    EXPECT_NE(r.err.find("--max-tokens: must be -1 (until the end of the sequence or the context) or a whole "
                         "number >= 1, got '" + bad + "'"),
              std::string::npos)
        << bad << ": " << r.err;
  }
  fs::remove_all(model);
}

// chat: -n -1 replies up to the context; an -n that leaves no room for a prompt is clamped with one notice
// (not an error), and the chat goes on.
TEST(CliInput, ChatMaxTokensPastTheContextIsClamped) {
  const std::string base = "chat -m " + quote(kModel) + " --context 40 --temperature 0 --ignore-eos ";
  const CommandResult over = deepmoe(base + "-n 100", "hi\nhow are you\n");
  ASSERT_EQ(over.code, 0) << over.err;
  EXPECT_EQ(count(over.err, "deepmoe: -n 100 leaves no room for a prompt in the context of 40 tokens"), 1u)
      << over.err;
  EXPECT_EQ(count(over.out, "\n"), 2u) << over.out;  // two replies
  const CommandResult all = deepmoe(base + "-n -1", "hi\n");
  ASSERT_EQ(all.code, 0) << all.err;
  EXPECT_FALSE(all.out.empty());
  EXPECT_EQ(deepmoe(base + "-n 0", "hi\n").code, 2);
}

// Window sizes past the model's context are refused (they would change what is computed), naming the flag and
// both numbers rather than an internal field.
TEST(CliInput, WindowsPastTheContextAreRefusedNamingTheFlag) {
  const fs::path model = small_context_model(16);
  const std::string m = quote(model.string());
  const CommandResult chat = deepmoe("chat -m " + m + " --context 17", "hi\n");
  EXPECT_EQ(chat.code, 1);
  EXPECT_NE(chat.err.find("deepmoe: error: --context 17 exceeds the model's context of 16 tokens "
                          "(max_position_embeddings in " + model.string() + "/config.json)"),
            std::string::npos)
      << chat.err;
  std::ofstream(model / "text.txt") << "To be, or not to be, that is the question.";
  const CommandResult ppl = deepmoe("perplexity -m " + m + " -f " + quote((model / "text.txt").string()) +
                                    " --ctx 32");
  EXPECT_EQ(ppl.code, 1);
  EXPECT_NE(ppl.err.find("deepmoe: error: --ctx 32 exceeds the model's context of 16 tokens"), std::string::npos)
      << ppl.err;
  for (const CommandResult* r : {&chat, &ppl}) EXPECT_EQ(r->err.find("field '"), std::string::npos) << r->err;
  fs::remove_all(model);
}

}  // namespace
}  // namespace deepmoe
