// Progress as a user at a terminal sees it: model loading (bytes of the checkpoint read, %) and long prompts
// (tokens done, tok/s) on stderr — only when stderr is a terminal, never with -q/--quiet, and without changing
// a single output token. util-linux `script` gives the command a pseudo-terminal.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "cli_test_util.h"

namespace deepmoe {
namespace {

using namespace cli_test;

bool have_script() { return std::system("command -v script > /dev/null 2>&1") == 0; }

// Runs `args` with stderr (and stdin) on a pseudo-terminal; stdout goes to `out_file` unless it is empty. Returns
// what the terminal showed.
CommandResult on_terminal(const std::string& args, const std::string& out_file = "") {
  std::string inner = deepmoe_bin() + " " + args;
  if (!out_file.empty()) inner += " > " + quote(out_file);
  return run_shell("script -qec " + quote(inner) + " /dev/null");
}

// A prompt of well over one prefill chunk (256 tokens).
fs::path long_prompt_file(const fs::path& dir) {
  std::string text;
  for (int i = 0; i < 120; ++i) text += "Now is the winter of our discontent made glorious summer by this sun. ";
  std::ofstream(dir / "long.txt") << text;
  return dir / "long.txt";
}

TEST(CliProgress, LoadingAndLongPromptsOnATerminal) {
  if (!have_script()) GTEST_SKIP() << "util-linux script not installed";
  const fs::path dir = scratch_dir();
  const std::string args = "generate -m " + quote(kModel) + " -f " + quote(long_prompt_file(dir).string()) +
                           " -n 4 --temperature 0 --output ids";
  const CommandResult tty = on_terminal(args, (dir / "tty.txt").string());
  ASSERT_EQ(tty.code, 0) << tty.out;
  EXPECT_NE(tty.out.find("loading weights, "), std::string::npos) << tty.out;
  EXPECT_NE(tty.out.find(" GB"), std::string::npos) << tty.out;
  EXPECT_NE(tty.out.find("prompt 256 of "), std::string::npos) << tty.out;
  EXPECT_NE(tty.out.find(" tok/s"), std::string::npos) << tty.out;
  EXPECT_NE(tty.out.find("\033[2K"), std::string::npos) << tty.out;  // the bar clears its line

  // The same tokens as without a terminal, where nothing of the bars is printed.
  const CommandResult piped = deepmoe(args);
  ASSERT_EQ(piped.code, 0) << piped.err;
  EXPECT_EQ(read_file(dir / "tty.txt"), piped.out);
  EXPECT_EQ(piped.err.find("loading weights"), std::string::npos) << piped.err;
  EXPECT_EQ(piped.err.find("prompt 256 of"), std::string::npos) << piped.err;
  EXPECT_EQ(piped.err.find('\033'), std::string::npos) << piped.err;

  // --quiet: no bars on the terminal either; the summary stays.
  for (const std::string quiet : {" -q", " --quiet"}) {
    const CommandResult q = on_terminal(args + quiet, (dir / "quiet.txt").string());
    ASSERT_EQ(q.code, 0) << q.out;
    EXPECT_EQ(q.out.find("loading"), std::string::npos) << q.out;
    EXPECT_EQ(q.out.find("prompt 256 of"), std::string::npos) << q.out;
    EXPECT_NE(q.out.find("generated 4 tokens"), std::string::npos) << q.out;
    EXPECT_EQ(read_file(dir / "quiet.txt"), piped.out);
  }
  fs::remove_all(dir);
}

TEST(CliProgress, ChatAndPerplexityToo) {
  if (!have_script()) GTEST_SKIP() << "util-linux script not installed";
  const fs::path dir = scratch_dir();
  const std::string ppl = "perplexity -m " + quote(kModel) + " -f " + quote(long_prompt_file(dir).string()) +
                          " --ctx 64 --chunks 1";
  const CommandResult tty = on_terminal(ppl);
  ASSERT_EQ(tty.code, 0) << tty.out;
  EXPECT_NE(tty.out.find("loading weights, "), std::string::npos) << tty.out;
  const CommandResult quiet = on_terminal(ppl + " --quiet");
  ASSERT_EQ(quiet.code, 0) << quiet.out;
  EXPECT_EQ(quiet.out.find("loading weights"), std::string::npos) << quiet.out;
  EXPECT_NE(quiet.out.find("Final estimate"), std::string::npos) << quiet.out;

  const std::string chat = deepmoe_bin() + " chat -q -m " + quote(kModel) + " -n 2 --temperature 0";
  const CommandResult chat_quiet = run_shell("script -qec " + quote(chat) + " /dev/null", "Hello\n/exit\n");
  ASSERT_EQ(chat_quiet.code, 0) << chat_quiet.out;
  EXPECT_EQ(chat_quiet.out.find("loading"), std::string::npos) << chat_quiet.out;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace deepmoe
