// The command-line option helpers on their own: --seed parsing, -n against the context (generate and chat),
// the prompt's final newline, errors renamed to the flag typed, -p / -f parsing through CLI11.
#include <gtest/gtest.h>

#include <CLI/CLI.hpp>

#include <string>

#include "flag_errors.h"
#include "max_tokens_option.h"
#include "prompt_source.h"
#include "seed_option.h"

namespace deepmoe::tools {
namespace {

TEST(SeedOption, MinusOneIsRandomAndTheWholeUnsignedRangeIsASeed) {
  EXPECT_FALSE(parse_seed("-1").seed.has_value());
  EXPECT_TRUE(parse_seed("-1").error.empty());
  EXPECT_EQ(parse_seed("0").seed, 0u);
  EXPECT_EQ(parse_seed("42").seed, 42u);
  EXPECT_EQ(parse_seed("18446744073709551615").seed, 18446744073709551615ull);
  for (const char* bad : {"", "-2", "-0", "+1", "18446744073709551616", "1x", " 1", "1.0", "0x10"}) {
    const ParsedSeed p = parse_seed(bad);
    EXPECT_FALSE(p.seed.has_value()) << bad;
    EXPECT_NE(p.error.find("must be -1 (a random seed) or a whole number from 0 to 18446744073709551615"),
              std::string::npos)
        << bad;
  }
  EXPECT_NE(random_seed(), random_seed());  // 2^-64 to fail by chance
}

TEST(SeedOption, ThroughCli11) {
  for (const auto& [args, given, seed] : std::vector<std::tuple<std::vector<std::string>, bool, uint64_t>>{
           {{}, false, 7}, {{"--seed", "-1"}, false, 7}, {{"--seed", "9"}, true, 9}, {{"--seed=-1"}, false, 7}}) {
    CLI::App app;
    uint64_t value = 7;
    bool was_given = false;
    add_seed_option(app, value, was_given);
    std::vector<std::string> reversed(args.rbegin(), args.rend());
    app.parse(reversed);
    EXPECT_EQ(was_given, given);
    EXPECT_EQ(value, seed);
  }
  CLI::App app;
  uint64_t value = 0;
  bool given = false;
  add_seed_option(app, value, given);
  std::vector<std::string> bad = {"x", "--seed"};
  EXPECT_THROW(app.parse(bad), CLI::ValidationError);
}

TEST(MaxTokensOption, DefaultMinusOneAndTheContext) {
  // Context 100, prompt 30: 70 tokens of room.
  EXPECT_EQ(resolve_max_tokens(std::nullopt, 256, 30, 100), 70);  // the default, capped by the room
  EXPECT_EQ(resolve_max_tokens(std::nullopt, 16, 30, 100), 16);
  EXPECT_EQ(resolve_max_tokens(-1, 256, 30, 100), 70);
  EXPECT_EQ(resolve_max_tokens(5, 256, 30, 100), 5);
  EXPECT_EQ(resolve_max_tokens(70, 256, 30, 100), 70);
  EXPECT_EQ(resolve_max_tokens(71, 256, 30, 100), 70);  // clamped (with a notice on stderr)
  EXPECT_EQ(resolve_max_tokens(5, 256, 100, 100), 1);   // no room: the request's own check reports the prompt
  // chat: the room kept free for a reply.
  EXPECT_EQ(chat_reply_room(std::nullopt, 512, 4096), 512);
  EXPECT_EQ(chat_reply_room(std::nullopt, 512, 40), 20);
  EXPECT_EQ(chat_reply_room(-1, 512, 40), 20);
  EXPECT_EQ(chat_reply_room(39, 512, 40), 39);
  EXPECT_EQ(chat_reply_room(40, 512, 40), 20);
  EXPECT_EQ(chat_reply_room(1000, 512, 40), 20);
}

TEST(MaxTokensOption, ZeroAndOtherNegativesAreUsageErrors) {
  for (const std::string good : {"1", "-1", "100000"}) {
    CLI::App app;
    std::optional<int64_t> n;
    add_max_tokens_option(app, n, 256);
    std::vector<std::string> args = {good, "-n"};
    EXPECT_NO_THROW(app.parse(args)) << good;
    EXPECT_EQ(n, std::stoll(good));
  }
  for (const std::string bad : {"0", "-2", "x", "1.5", ""}) {
    CLI::App app;
    std::optional<int64_t> n;
    add_max_tokens_option(app, n, 256);
    std::vector<std::string> args = {bad, "--max-tokens"};
    try {
      app.parse(args);
      ADD_FAILURE() << bad << " accepted";
    } catch (const CLI::ValidationError& e) {
      EXPECT_NE(std::string(e.what()).find("must be -1 (until the end of the sequence or the context) or a whole "
                                           "number >= 1"),
                std::string::npos)
          << e.what();
    }
  }
}

TEST(PromptSource, OneFinalNewlineGoes) {
  EXPECT_EQ(drop_final_newline("text\n"), "text");
  EXPECT_EQ(drop_final_newline("text\r\n"), "text");
  EXPECT_EQ(drop_final_newline("text\n\n"), "text\n");
  EXPECT_EQ(drop_final_newline("text"), "text");
  EXPECT_EQ(drop_final_newline("\n"), "");
  EXPECT_EQ(drop_final_newline(""), "");
  EXPECT_EQ(drop_final_newline("a\r"), "a\r");
}

TEST(PromptSource, PromptFlagsThroughCli11) {
  {
    CLI::App app;
    PromptArgs args;
    add_prompt_options(app, args);
    std::vector<std::string> argv = {"", "-p"};
    app.parse(argv);
    EXPECT_EQ(read_prompt(args), "");  // an empty prompt is a prompt
  }
  {
    CLI::App app;
    PromptArgs args;
    add_prompt_options(app, args);
    std::vector<std::string> argv;
    app.parse(argv);
    EXPECT_THROW(read_prompt(args), CLI::RequiredError);
  }
  {
    CLI::App app;
    PromptArgs args;
    add_prompt_options(app, args);
    std::vector<std::string> argv = {"f.txt", "-f", "hi", "-p"};
    EXPECT_THROW(app.parse(argv), CLI::ExcludesError);
  }
}

TEST(FlagErrors, FieldsBecomeFlags) {
  EXPECT_EQ(flag_for_field("top_p"), "--top-p");
  EXPECT_EQ(flag_for_field("repetition_penalty"), "--repeat-penalty");
  EXPECT_EQ(flag_for_field("penalty_last_n"), "--repeat-last-n");
  EXPECT_EQ(flag_for_field("max_tokens"), "-n/--max-tokens");
  EXPECT_EQ(flag_for_field("weight"), "");
  EXPECT_STREQ(flag_error(Error("must be in (0, 1], got 2", {.field = "top_p"})).what(),
               "--top-p: must be in (0, 1], got 2");
  EXPECT_STREQ(flag_error(Error("has 20 tokens; ...", {.field = "prompt"})).what(), "the prompt has 20 tokens; ...");
  // Unknown fields and errors without one are left alone; a file stays named.
  EXPECT_STREQ(flag_error(Error("x", {.file = "f.json", .field = "weight"})).what(), "f.json: field 'weight': x");
  EXPECT_STREQ(flag_error(Error("no space")).what(), "no space");
}

}  // namespace
}  // namespace deepmoe::tools
