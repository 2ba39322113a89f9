// OpenAI's response objects for one request: chat.completion / text_completion bodies, their streamed chunks
// (SSE `data:` events ending in `data: [DONE]`), logprobs in each endpoint's format, usage with
// prompt_tokens_details.cached_tokens. Fed with the engine's updates; knows nothing of HTTP.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "server/generation_plan.h"
#include "server/generation_stream.h"
#include "server/openai_request.h"

namespace deepmoe::server {

class OpenAiResponder {
 public:
  OpenAiResponder(const ApiRequest& request, const GenerationPlan& plan, const ServedModel& model, std::string id,
                  int64_t created_unix);

  // Records an update; when streaming, returns the SSE events it makes (possibly none).
  std::string add(const ChoiceUpdate& update);
  // Streaming: the events that open the stream (chat: each choice's assistant role; completions with echo: the
  // prompt text), and those that close it (the usage chunk when asked for, then [DONE]).
  std::string stream_start() const;
  std::string stream_end() const;
  // Not streaming: the whole response body, once every choice has ended.
  std::string body() const;

  // Why the request failed, when a choice failed in the engine (empty otherwise).
  const std::string& engine_error() const { return engine_error_; }
  bool any_cancelled() const;

  int64_t prompt_tokens() const;
  int64_t cached_prompt_tokens() const;
  int64_t completion_tokens() const;

  // `data: <json>\n\n`
  static std::string sse(const std::string& json);

 private:
  struct Choice {
    std::string text;
    std::vector<SampledToken> tokens;
    bool ended = false;
    ChoiceEnd end;
  };
  std::string chunk_json(size_t index, const std::string& text, const std::vector<SampledToken>& tokens,
                         const char* finish_reason, bool role) const;
  std::string logprobs_json(const std::vector<SampledToken>& tokens, size_t text_offset) const;
  std::string usage_json() const;
  const char* finish_reason(const ChoiceEnd& end) const;

  const ApiRequest& request_;
  const GenerationPlan& plan_;
  const ServedModel& model_;
  std::string id_;
  int64_t created_;
  bool chat_;
  std::vector<Choice> choices_;
  std::string engine_error_;
};

}  // namespace deepmoe::server
