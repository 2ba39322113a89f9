#include "max_tokens_option.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstdio>
#include <string>

namespace deepmoe::tools {
namespace {

// One clamping notice per run: chat would otherwise repeat it for every reply.
void notice_once(const std::string& text) {
  static std::atomic<bool> shown{false};
  if (shown.exchange(true)) return;
  std::fprintf(stderr, "deepmoe: %s\n", text.c_str());
  std::fflush(stderr);
}

std::string check_max_tokens(const std::string& text) {
  int64_t value = 0;
  const char* end = text.data() + text.size();
  const auto [at, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || at != end || (value != -1 && value < 1))
    return "must be -1 (until the end of the sequence or the context) or a whole number >= 1, got '" + text + "'";
  return "";
}

}  // namespace

void add_max_tokens_option(CLI::App& app, std::optional<int64_t>& max_tokens, int64_t default_tokens) {
  app.add_option("-n,--max-tokens", max_tokens,
                 "Most new tokens to generate (default " + std::to_string(default_tokens) +
                     "); -1 = until the end of the sequence or the context. Generation stops at the model's "
                     "context: a larger -n is clamped to what fits, with a notice")
      ->check(CLI::Validator(check_max_tokens, ""));
}

int64_t resolve_max_tokens(std::optional<int64_t> max_tokens, int64_t default_tokens, int64_t prompt_tokens,
                           int64_t context) {
  const int64_t room = std::max<int64_t>(context - prompt_tokens, 1);
  if (!max_tokens) return std::min(default_tokens, room);
  if (*max_tokens == -1) return room;
  if (*max_tokens > room) {
    notice_once("-n " + std::to_string(*max_tokens) + " is more than fits: the context of " +
                std::to_string(context) + " tokens leaves " + std::to_string(room) + " after the " +
                std::to_string(prompt_tokens) + "-token prompt; generating at most " + std::to_string(room));
    return room;
  }
  return *max_tokens;
}

int64_t chat_reply_room(std::optional<int64_t> max_tokens, int64_t default_tokens, int64_t context) {
  const int64_t half = std::max<int64_t>(context / 2, 1);
  if (!max_tokens || *max_tokens == -1) return std::min(default_tokens, half);
  if (*max_tokens >= context) {
    notice_once("-n " + std::to_string(*max_tokens) + " leaves no room for a prompt in the context of " +
                std::to_string(context) + " tokens: replies stop at the context, and the oldest turns are " +
                "dropped to keep " + std::to_string(half) + " tokens free for a reply");
    return half;
  }
  return *max_tokens;
}

}  // namespace deepmoe::tools
