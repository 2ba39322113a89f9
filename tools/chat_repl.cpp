#include "chat_repl.h"

#include <editline/readline.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <iostream>

namespace deepmoe::tools {
namespace {

constexpr const char* kPrompt = "> ";
constexpr const char* kContinuationPrompt = ". ";
constexpr const char* kBlockMarker = "\"\"\"";

std::string trim(const std::string& s) {
  const size_t begin = s.find_first_not_of(" \t\r\n");
  if (begin == std::string::npos) return {};
  const size_t end = s.find_last_not_of(" \t\r\n");
  return s.substr(begin, end - begin + 1);
}

std::string lowercase(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return s;
}

}  // namespace

const char* chat_help_text() {
  return "commands:\n"
         "  /help           this list\n"
         "  /reset          start a new conversation (the system prompt stays)\n"
         "  /save FILE      write the conversation to FILE as JSON messages (what `deepmoe template` reads)\n"
         "  /exit, /quit    end the chat (so does Ctrl-D)\n"
         "input:\n"
         "  Ctrl-C          stop the reply being written\n"
         "  \\ at line end   continue the message on the next line\n"
         "  \"\"\"             on a line of its own: start or end a block of several lines (for pasting)\n"
         "  //text          send a message that starts with /\n";
}

ChatInput parse_chat_input(const std::string& entry) {
  ChatInput in;
  if (entry.starts_with("//")) {
    in.text = entry.substr(1);
    return in;
  }
  if (!entry.starts_with("/")) {
    in.text = entry;
    return in;
  }
  in.kind = ChatInput::Kind::Command;
  const size_t space = entry.find_first_of(" \t");
  in.text = entry.substr(1, space == std::string::npos ? std::string::npos : space - 1);
  if (space != std::string::npos) in.argument = trim(entry.substr(space));
  return in;
}

ChatLineReader::ChatLineReader(bool interactive) : interactive_(interactive) {
  if (interactive_) using_history();
}

ChatLineReader::~ChatLineReader() {
  if (interactive_) clear_history();
}

std::optional<std::string> ChatLineReader::read_line(const char* prompt) {
  if (!interactive_) {
    std::string line;
    if (!std::getline(std::cin, line)) return std::nullopt;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return line;
  }
  char* raw = readline(prompt);
  if (!raw) return std::nullopt;
  std::string line(raw);
  std::free(raw);
  return line;
}

std::optional<ChatInput> ChatLineReader::read() {
  while (true) {
    std::optional<std::string> line = read_line(kPrompt);
    if (!line) return std::nullopt;
    std::string entry;
    if (trim(*line) == kBlockMarker) {
      // A block: every line verbatim up to the closing marker (or the end of input).
      bool first = true;
      while (std::optional<std::string> next = read_line(kContinuationPrompt)) {
        if (trim(*next) == kBlockMarker) break;
        entry += (first ? "" : "\n") + *next;
        first = false;
      }
    } else {
      entry = *line;
      while (!entry.empty() && entry.back() == '\\') {
        entry.back() = '\n';
        std::optional<std::string> next = read_line(kContinuationPrompt);
        if (!next) break;
        entry += *next;
      }
    }
    entry = trim(entry);
    if (entry.empty()) continue;
    if (interactive_) add_history(entry.c_str());
    return parse_chat_input(entry);
  }
}

bool ChatLineReader::confirm(const std::string& question) {
  const std::string prompt = question + " [y/N] ";
  if (!interactive_) {
    std::fputs(prompt.c_str(), stderr);
    std::fflush(stderr);
  }
  const std::optional<std::string> answer = read_line(prompt.c_str());
  if (!interactive_) std::fputc('\n', stderr);
  if (!answer) return false;
  const std::string a = lowercase(trim(*answer));
  return a == "y" || a == "yes";
}

}  // namespace deepmoe::tools
