// The OpenAI request parser: valid bodies become the request they describe; each kind of bad body becomes a 400
// naming the field, never an exception.
#include <gtest/gtest.h>

#include <string>

#include "server/openai_request.h"

namespace deepmoe::server {
namespace {

ApiRequest ok(ApiEndpoint endpoint, const std::string& body) {
  ParsedRequest r = parse_api_request(endpoint, body);
  if (auto* e = std::get_if<ApiError>(&r)) ADD_FAILURE() << body << " → " << e->message;
  return std::get_if<ApiRequest>(&r) ? std::get<ApiRequest>(r) : ApiRequest{};
}

ApiError bad(ApiEndpoint endpoint, const std::string& body) {
  ParsedRequest r = parse_api_request(endpoint, body);
  EXPECT_TRUE(std::holds_alternative<ApiError>(r)) << body;
  return std::holds_alternative<ApiError>(r) ? std::get<ApiError>(r) : ApiError{};
}

constexpr auto kChat = ApiEndpoint::ChatCompletions;
constexpr auto kCompletions = ApiEndpoint::Completions;

TEST(OpenAiRequest, ChatFieldsAreRead) {
  const ApiRequest r = ok(kChat, R"({"model":"m","messages":[{"role":"developer","content":"Be brief."},
      {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
      "max_completion_tokens":7,"max_tokens":9,"temperature":0.5,"top_p":0.9,"top_k":-1,"min_p":0.05,
      "presence_penalty":0.5,"frequency_penalty":-0.5,"repetition_penalty":1.2,"seed":-3,"stop":"\n",
      "logprobs":true,"top_logprobs":4,"n":2,"stream":true,"stream_options":{"include_usage":true},"user":"u"})");
  EXPECT_EQ(r.model, "m");
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[0].role, "system");
  EXPECT_EQ(*r.messages[1].content, "ab");
  EXPECT_EQ(*r.max_tokens, 7);  // max_completion_tokens wins
  EXPECT_DOUBLE_EQ(r.sampling.temperature, 0.5);
  EXPECT_EQ(r.sampling.top_k, 0);
  EXPECT_DOUBLE_EQ(r.sampling.repetition_penalty, 1.2);
  EXPECT_EQ(r.sampling.seed, uint64_t(-3));
  EXPECT_TRUE(r.seed_given);
  EXPECT_EQ(r.stop, std::vector<std::string>{"\n"});
  EXPECT_TRUE(r.sampling.logprobs);
  EXPECT_EQ(r.sampling.top_logprobs, 4);
  EXPECT_EQ(r.n, 2);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
}

TEST(OpenAiRequest, CompletionPromptForms) {
  EXPECT_EQ(*ok(kCompletions, R"({"model":"m","prompt":"hi"})").prompts.at(0).text, "hi");
  const ApiRequest list = ok(kCompletions, R"({"model":"m","prompt":["a","b"],"logprobs":2})");
  ASSERT_EQ(list.prompts.size(), 2u);
  EXPECT_EQ(*list.prompts[1].text, "b");
  EXPECT_TRUE(list.sampling.logprobs);
  EXPECT_EQ(list.sampling.top_logprobs, 2);
  const ApiRequest ids = ok(kCompletions, R"({"model":"m","prompt":[1,2,3]})");
  ASSERT_EQ(ids.prompts.size(), 1u);
  EXPECT_FALSE(ids.prompts[0].text);
  EXPECT_EQ(ids.prompts[0].tokens, (std::vector<int32_t>{1, 2, 3}));
  const ApiRequest nested = ok(kCompletions, R"({"model":"m","prompt":[[1],[2,3]],"n":3})");
  EXPECT_EQ(nested.prompts.size(), 2u);
  EXPECT_EQ(nested.n, 3);
  // null means "not given"
  EXPECT_FALSE(ok(kCompletions, R"({"model":"m","prompt":"x","max_tokens":null,"stop":null})").max_tokens);
}

TEST(OpenAiRequest, BadFieldsNameTheField) {
  struct Case {
    ApiEndpoint endpoint;
    const char* body;
    const char* param;
  };
  const Case cases[] = {
      {kChat, R"({"model":"m","messages":[]})", "messages"},
      {kChat, R"({"messages":[{"role":"user","content":"x"}]})", "model"},
      {kChat, R"({"model":"m","messages":[{"role":"root","content":"x"}]})", "messages[0].role"},
      {kChat, R"({"model":"m","messages":[{"role":"user","content":"x","extra":1}]})", "messages[0].extra"},
      {kChat, R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0})", "max_tokens"},
      {kChat, R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":2.5})", "max_tokens"},
      {kChat, R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":99999999999999999999})", "max_tokens"},
      {kChat, R"({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":true})", "temperature"},
      {kChat, R"({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":-0.5})", "temperature"},
      {kChat, R"({"model":"m","messages":[{"role":"user","content":"x"}],"n":9})", "n"},
      {kChat, R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":{}})", "stream_options"},
      {kChat, R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":{"x":1}})", "stream_options.x"},
      {kChat, R"({"model":"m","messages":[{"role":"user","content":"x"}],"tools":[]})", "tools"},
      {kCompletions, R"({"model":"m","prompt":[1,-2]})", "prompt[1]"},
      {kCompletions, R"({"model":"m","prompt":[1,4294967296]})", "prompt[1]"},
      {kCompletions, R"({"model":"m","prompt":"x","logprobs":6})", "logprobs"},
      {kCompletions, R"({"model":"m","prompt":["a","b","c","d","e","f","g","h","i"],"n":2})", "n"},
      {kCompletions, R"({"model":"m","prompt":"x","echo":true,"logprobs":0})", "echo"},
  };
  for (const Case& c : cases) {
    const ApiError e = bad(c.endpoint, c.body);
    EXPECT_EQ(e.status, 400) << c.body;
    EXPECT_EQ(e.param, c.param) << c.body << " → " << e.message;
    EXPECT_NE(e.message.find(c.param), std::string::npos) << e.message;
  }
}

TEST(OpenAiRequest, HostileBodiesAreRefusedWithoutRecursion) {
  EXPECT_EQ(json_nesting_depth(R"({"a":[1,{"b":"[[[["}]})"), 3);
  const std::string deep = "{\"model\":\"m\",\"messages\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  const ApiError e = bad(kChat, deep);
  EXPECT_EQ(e.code, "invalid_json");
  EXPECT_NE(e.message.find("100001 deep"), std::string::npos) << e.message;
  EXPECT_EQ(bad(kChat, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\xc3\x28\"}]}").code,
            "invalid_json");
  EXPECT_EQ(bad(kChat, "").code, "invalid_json");
  EXPECT_EQ(bad(kChat, "[1]").code, "invalid_json");
  EXPECT_EQ(bad(kChat, R"({"temperature": NaN})").code, "invalid_json");
  EXPECT_EQ(bad(kChat, R"({"temperature": 1e999})").code, "invalid_json");  // number overflow
}

TEST(OpenAiRequest, ErrorJsonHasOpenAiShape) {
  const ApiError e = bad(kChat, R"({"model":"m","messages":[{"role":"user","content":"x"}],"top_k":-7})");
  EXPECT_EQ(e.to_json(),
            R"({"error":{"message":"'top_k' must be >= 0 (0 disables it), got -7","type":"invalid_request_error","param":"top_k","code":"invalid_value"}})");
}

}  // namespace
}  // namespace deepmoe::server
