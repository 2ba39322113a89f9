// libFuzzer target: the OpenAI request parser (server/openai_request.h) on arbitrary bodies. The first byte picks
// the endpoint. Whatever the bytes, the parser returns a request or a 400 error with a message — never a crash,
// an exception or unbounded recursion.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "server/openai_request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  using deepmoe::server::ApiEndpoint;
  const ApiEndpoint endpoint = (data[0] & 1) ? ApiEndpoint::Completions : ApiEndpoint::ChatCompletions;
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  const auto parsed = deepmoe::server::parse_api_request(endpoint, body);
  if (const auto* e = std::get_if<deepmoe::server::ApiError>(&parsed)) {
    if (e->status != 400 || e->message.empty()) std::abort();
    if (e->to_json().empty()) std::abort();
  } else {
    const auto& r = std::get<deepmoe::server::ApiRequest>(parsed);
    const bool has_input = endpoint == ApiEndpoint::ChatCompletions ? !r.messages.empty() : !r.prompts.empty();
    if (!has_input || r.n < 1) std::abort();
  }
  return 0;
}
