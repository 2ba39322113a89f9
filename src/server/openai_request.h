// The request parser of the OpenAI API: a JSON body in, a validated ApiRequest or the ApiError to answer with
// out — never an exception, whatever the bytes (a libFuzzer target feeds it random bodies). It checks the JSON
// (nesting depth, UTF-8, types), every field's type and range, and rejects unknown fields by name; checks that
// need the model (context length, vocabulary, chat template) come after it (generation_plan.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "sampling/sampling_params.h"
#include "server/api_error.h"
#include "tokenizer/chat_template.h"

namespace deepmoe::server {

enum class ApiEndpoint { ChatCompletions, Completions };

// One prompt of /v1/completions: text, or token ids.
struct PromptInput {
  std::optional<std::string> text;
  std::vector<int32_t> tokens;  // when text is nullopt
};

// response_format: free text, any JSON object, or JSON valid under a schema (compiled in generation_plan.h).
struct ResponseFormat {
  enum class Type { Text, JsonObject, JsonSchema };
  Type type = Type::Text;
  std::string name;    // json_schema.name
  std::string schema;  // json_schema.schema, serialized
  bool strict = false; // json_schema.strict: objects allow only the properties they list (additionalProperties
                       // defaults to false)
};

struct ApiRequest {
  ApiEndpoint endpoint = ApiEndpoint::ChatCompletions;
  std::string model;
  std::vector<ChatMessage> messages;  // chat
  std::vector<PromptInput> prompts;   // completions: a string, a list of strings, token ids, or lists of them
  SamplingParams sampling;            // logprobs / top_logprobs included
  bool seed_given = false;
  std::optional<int64_t> max_tokens;  // unset: completions 16, chat the room left in the context
  std::vector<std::string> stop;
  int64_t n = 1;                      // choices per prompt
  bool stream = false;
  bool include_usage = false;         // stream_options.include_usage
  bool echo = false;                  // completions: the prompt text before the completion
  bool ignore_eos = false;            // keep going past EOS (benchmarks; vLLM's extension)
  ResponseFormat response_format;
  bool token_healing = false;         // back off the prompt's last token(s) (runtime/token_healing.h)
};

// Bounds a deployment puts on one request (the reliability checklist §2 R2: fan-out is bounded before any work).
struct RequestLimits {
  int64_t max_n = 8;
  int64_t max_choices = 16;         // prompts × n
  int64_t max_completion_logprobs = 5;  // /v1/completions `logprobs`, as OpenAI
  size_t max_messages = 4096;
  size_t max_prompt_ids = 1 << 20;  // token ids in one prompt
  int max_json_depth = 64;
  SamplingLimits sampling;
  StopLimits stop;
};

using ParsedRequest = std::variant<ApiRequest, ApiError>;

ParsedRequest parse_api_request(ApiEndpoint endpoint, std::string_view body, const RequestLimits& limits = {});

// The deepest nesting of arrays and objects in `json` (strings skipped), counted without parsing so a
// 100,000-deep body is refused before any recursive code sees it.
int json_nesting_depth(std::string_view json);

}  // namespace deepmoe::server
