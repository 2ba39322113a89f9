// -n / --max-tokens as llama.cpp users know it: N >= 1 new tokens at most, -1 = until the end of the sequence or
// the context. Generation never passes the model's context: a larger -n is clamped to what fits, with a notice on
// stderr (once per run), in every command that takes -n.
#pragma once

#include <cstdint>
#include <optional>

namespace CLI {
class App;
}

namespace deepmoe::tools {

// Adds -n,--max-tokens; `default_tokens` is what the command uses without it (for the help text).
void add_max_tokens_option(CLI::App& app, std::optional<int64_t>& max_tokens, int64_t default_tokens);

// New tokens for a request with a prompt of `prompt_tokens` in a context of `context` tokens: the default when
// -n is unset (never past the context), all the room left for -1, and -n clamped to the room left (notice).
// At least 1, so a prompt that fills the context is reported by the request's own check.
int64_t resolve_max_tokens(std::optional<int64_t> max_tokens, int64_t default_tokens, int64_t prompt_tokens,
                           int64_t context);

// Room `chat` keeps free for a reply when trimming old turns: -n, or for no -n and -1 the default (at most half
// the context); an -n that leaves no room for a prompt is clamped to half the context (notice).
int64_t chat_reply_room(std::optional<int64_t> max_tokens, int64_t default_tokens, int64_t context);

}  // namespace deepmoe::tools
