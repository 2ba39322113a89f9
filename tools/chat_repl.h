// What `deepmoe chat` reads from its user: messages, which may span several lines, and slash commands. On a
// terminal lines are read with libedit (cursor keys, history with the up arrow, Ctrl-R search); from a pipe they
// are plain lines, so a script can drive a chat.
//
// A message continues on the next line when a line ends in a backslash, and a line holding only """ opens a
// block that runs to the next such line (for pasting text with blank lines). A line starting with "/" is a
// command; "//" at the start sends a message that begins with "/".
#pragma once

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

namespace deepmoe::tools {

struct ChatInput {
  enum class Kind { Message, Command };
  Kind kind = Kind::Message;
  std::string text;      // the message, or the command's name without the slash ("save")
  std::string argument;  // the rest of a command line, trimmed ("notes.json")
};

// The commands chat understands, for /help.
const char* chat_help_text();

class ChatLineReader {
 public:
  // interactive: read from the terminal with line editing and history (stdin and stdout must be terminals).
  explicit ChatLineReader(bool interactive);
  ~ChatLineReader();
  ChatLineReader(const ChatLineReader&) = delete;
  ChatLineReader& operator=(const ChatLineReader&) = delete;

  // The next message or command; nullopt at the end of input (Ctrl-D). Empty messages are skipped.
  std::optional<ChatInput> read();
  // Asks a yes/no question; only "y" or "yes" (any case) is yes; the end of input is no.
  bool confirm(const std::string& question);

 private:
  std::optional<std::string> read_line(const char* prompt);

  bool interactive_;
};

// Splits a typed entry into a message or a command (see the file comment).
ChatInput parse_chat_input(const std::string& entry);

}  // namespace deepmoe::tools
