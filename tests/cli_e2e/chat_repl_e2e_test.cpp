// `deepmoe chat`'s input side driven through stdin: slash commands (/help, /reset, /save, unknown ones) never
// reach the model, multi-line messages arrive whole, Ctrl-C stops only the reply being written. Replies are
// checked against the library's greedy forward pass.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_test_util.h"
#include "greedy_reference.h"
#include "tokenizer/chat_template.h"

namespace deepmoe {
namespace {

using namespace cli_test;

const std::string kChat = "chat -m " + quote(kModel) + " -n 4 --temperature 0 --ignore-eos";

std::string greedy_reply(const std::vector<ChatMessage>& history) {
  const ChatTemplate tmpl = ChatTemplate::from_tokenizer_config(kModel);
  return reference().greedy_text(tmpl.render(history, true), 4, false);
}

struct SavedMessage {
  std::string role, content;
};

std::vector<SavedMessage> read_transcript(const fs::path& path) {
  std::vector<SavedMessage> out;
  for (const auto& m : nlohmann::json::parse(read_file(path))) out.push_back({m.at("role"), m.at("content")});
  return out;
}

TEST(ChatRepl, CommandsAreNotSentToTheModel) {
  const CommandResult r = deepmoe(kChat, "/help\n/bogus thing\nHello\n/exit\n");
  ASSERT_EQ(r.code, 0) << r.err;
  // Only "Hello" reached the model: one reply, the one to a conversation of that message alone.
  EXPECT_EQ(r.out, greedy_reply({{"user", "Hello"}}) + "\n");
  EXPECT_NE(r.err.find("/save FILE"), std::string::npos) << r.err;  // the help text
  EXPECT_NE(r.err.find("[unknown command /bogus: /help lists the commands"), std::string::npos) << r.err;
}

TEST(ChatRepl, ResetStartsANewConversationAndSays) {
  const fs::path dir = scratch_dir();
  const CommandResult r = deepmoe(kChat + " --system 'Be brief.'",
                                  "Hello\n/reset\nHow are you?\n/save " + (dir / "t.json").string() + "\n");
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string first = greedy_reply({{"system", "Be brief."}, {"user", "Hello"}});
  const std::vector<ChatMessage> after = {{"system", "Be brief."}, {"user", "How are you?"}};
  const std::string second = greedy_reply(after);
  EXPECT_EQ(r.out, first + "\n" + second + "\n");
  EXPECT_NE(r.err.find("[new conversation: 2 message(s) forgotten, the system prompt kept]"), std::string::npos)
      << r.err;
  // The saved transcript is the conversation after the reset.
  const std::vector<SavedMessage> saved = read_transcript(dir / "t.json");
  ASSERT_EQ(saved.size(), 3u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(saved[i].role, after[i].role);
    EXPECT_EQ(saved[i].content, after[i].content);
  }
  EXPECT_EQ(saved[2].role, "assistant");
  EXPECT_EQ(saved[2].content, second);
  EXPECT_NE(r.err.find("[saved 3 message(s) to " + (dir / "t.json").string() + "]"), std::string::npos) << r.err;
  fs::remove_all(dir);
}

TEST(ChatRepl, SaveErrorsKeepTheChatGoing) {
  const fs::path dir = scratch_dir();
  const CommandResult r = deepmoe(kChat, "/save\n/save " + dir.string() + "\n/save /dev/full\nHi\n");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("[/save needs a file name"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("[not saved: " + dir.string() + ": cannot create: Is a directory]"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("[not saved: /dev/full: cannot write: No space left on device]"), std::string::npos) << r.err;
  EXPECT_EQ(r.out, greedy_reply({{"user", "Hi"}}) + "\n");
  fs::remove_all(dir);
}

// A line ending in a backslash continues the message; a """ line opens a block that keeps blank lines; "//"
// sends a message starting with "/". Each arrives as one message (checked in the saved transcript).
TEST(ChatRepl, MultiLineMessages) {
  const fs::path dir = scratch_dir();
  const std::string script = "first line\\\nsecond line\n\"\"\"\npara one\n\npara two\n\"\"\"\n//slash text\n/save " +
                             (dir / "t.json").string() + "\n";
  const CommandResult r = deepmoe("chat -m " + quote(kModel) + " -n 2 --temperature 0 --ignore-eos", script);
  ASSERT_EQ(r.code, 0) << r.err;
  const std::vector<SavedMessage> saved = read_transcript(dir / "t.json");
  ASSERT_EQ(saved.size(), 6u) << r.err;
  EXPECT_EQ(saved[0].content, "first line\nsecond line");
  EXPECT_EQ(saved[2].content, "para one\n\npara two");
  EXPECT_EQ(saved[4].content, "/slash text");
  for (size_t i : {0, 2, 4}) EXPECT_EQ(saved[i].role, "user");
  fs::remove_all(dir);
}

// SIGINT while a long reply streams stops that reply (the chat reads on, and keeps what was written); the test
// waits for the reply to start before interrupting and only then sends the next line, so nothing depends on
// timing.
TEST(ChatRepl, CtrlCStopsOnlyTheReply) {
  const fs::path dir = scratch_dir();
  const std::string script =
      "set -e\n"
      "cd " + quote(dir.string()) + "\n"
      "mkfifo in\n" +
      deepmoe_bin() + " chat -m " + quote(kModel) + " -n 100000 --temperature 0 --ignore-eos < in > out 2> err &\n"
      "pid=$!\n"
      "exec 3> in\n"
      "echo Hello >&3\n"
      "while [ ! -s out ]; do sleep 0.05; done\n"
      "kill -INT $pid\n"
      "echo '/save t.json' >&3\n"
      "exec 3>&-\n"
      "wait $pid\n";
  const CommandResult r = run_shell("sh -c " + quote(script));
  const std::string err = read_file(dir / "err"), out = read_file(dir / "out");
  ASSERT_EQ(r.code, 0) << r.err << err;
  EXPECT_NE(err.find("[reply stopped]"), std::string::npos) << err;
  const std::vector<SavedMessage> saved = read_transcript(dir / "t.json");
  ASSERT_EQ(saved.size(), 2u) << err;
  EXPECT_EQ(saved[1].role, "assistant");
  EXPECT_EQ(saved[1].content + "\n", out);  // what was written is what the history keeps
  // The reply was cut short of the 100000 tokens asked for, and what was written is the start of the greedy
  // continuation (a token adds zero bytes or more, so this many steps cover it unless dozens of tokens had
  // no text).
  ASSERT_FALSE(saved[1].content.empty());
  const ChatTemplate tmpl = ChatTemplate::from_tokenizer_config(kModel);
  const std::vector<ChatMessage> asked = {{"user", "Hello"}};
  const std::string continuation =
      reference().greedy_text(tmpl.render(asked, true), int(saved[1].content.size()) + 64, false);
  EXPECT_TRUE(continuation.starts_with(saved[1].content)) << saved[1].content;
  fs::remove_all(dir);
}

// On a terminal (script(1) gives one) /reset asks first: "n" keeps the conversation, "y" forgets it.
TEST(ChatRepl, ResetAsksOnATerminal) {
  if (std::system("command -v script > /dev/null 2>&1") != 0) GTEST_SKIP() << "util-linux script not installed";
  const std::string inner = deepmoe_bin() + " " + kChat;
  const CommandResult r = run_shell("script -qec " + quote(inner) + " /dev/null", "Hello\n/reset\nn\n/reset\ny\n/exit\n");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  const size_t question = r.out.find("Forget the 2 message(s) of this conversation? [y/N]");
  const size_t kept = r.out.find("[kept the conversation]");
  const size_t forgotten = r.out.find("[new conversation: 2 message(s) forgotten]");
  ASSERT_NE(question, std::string::npos) << r.out;
  ASSERT_NE(kept, std::string::npos) << r.out;
  ASSERT_NE(forgotten, std::string::npos) << r.out;
  EXPECT_LT(question, kept);
  EXPECT_LT(kept, forgotten);
}

}  // namespace
}  // namespace deepmoe
