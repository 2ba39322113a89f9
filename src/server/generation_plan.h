// From a parsed API request to the generation requests the engine runs: the chat template rendered and the
// prompts tokenized, one GenerationRequest per choice (prompt-major, n per prompt), checked against the model
// (vocabulary, context length: prompt + max_tokens must fit, with the numbers in the message).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "runtime/generation_request.h"
#include "server/api_error.h"
#include "server/openai_request.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace deepmoe::server {

// What the server knows of the model it serves.
struct ServedModel {
  std::string id;  // the name clients pass as "model"
  const Tokenizer* tokenizer = nullptr;
  std::optional<ChatTemplate> chat_template;  // none: /v1/chat/completions answers 400
  int64_t context_length = 0;
  int64_t vocab_size = 0;
};

struct PlannedPrompt {
  std::vector<int32_t> tokens;
  std::string text;  // the prompt as text (for echo)
};

struct GenerationPlan {
  std::vector<PlannedPrompt> prompts;
  std::vector<GenerationRequest> choices;  // prompts.size() × n, prompt-major
  int64_t n = 1;
};

std::variant<GenerationPlan, ApiError> plan_generation(const ApiRequest& request, const ServedModel& model);

}  // namespace deepmoe::server
