#include "runtime/generation_request.h"

namespace deepmoe {
namespace {

Error invalid(const std::string& field, const std::string& message) {
  return Error(message, ErrorContext{.field = field});
}

}  // namespace

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::None: return "none";
    case FinishReason::Eos: return "eos";
    case FinishReason::StopString: return "stop";
    case FinishReason::MaxTokens: return "length";
    case FinishReason::ContextFull: return "context";
  }
  return "?";
}

std::optional<Error> validate_request(const GenerationRequest& r, int64_t vocab_size, int64_t context_length) {
  if (r.prompt.empty()) return invalid("prompt", "is empty; at least one token is needed");
  for (size_t i = 0; i < r.prompt.size(); ++i) {
    if (r.prompt[i] < 0 || r.prompt[i] >= vocab_size)
      return invalid("prompt", "token " + std::to_string(r.prompt[i]) + " at index " + std::to_string(i) +
                                   " is outside the vocabulary [0, " + std::to_string(vocab_size) + ")");
  }
  for (int32_t id : r.stop_token_ids) {
    if (id < 0 || id >= vocab_size)
      return invalid("stop_token_ids", "token " + std::to_string(id) + " is outside the vocabulary [0, " +
                                           std::to_string(vocab_size) + ")");
  }
  if (r.max_tokens < 1) return invalid("max_tokens", "must be >= 1, got " + std::to_string(r.max_tokens));
  const int64_t prompt_tokens = static_cast<int64_t>(r.prompt.size());
  if (prompt_tokens >= context_length)
    return invalid("prompt", "has " + std::to_string(prompt_tokens) + " tokens; the model's context length is " +
                                 std::to_string(context_length) + " tokens");
  if (r.max_tokens > context_length - prompt_tokens)
    return invalid("max_tokens", std::to_string(r.max_tokens) + " new tokens after a prompt of " +
                                     std::to_string(prompt_tokens) + " exceed the model's context length of " +
                                     std::to_string(context_length) + " tokens (at most " +
                                     std::to_string(context_length - prompt_tokens) + " fit)");
  if (auto e = validate(r.sampling)) return e;
  if (auto e = validate_stop_strings(r.stop)) return e;
  return std::nullopt;
}

}  // namespace deepmoe
