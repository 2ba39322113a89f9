// The native DeepSeek-V3 chat template against Jinja2's rendering of the real template (golden file, 300
// conversations), plus the errors for inputs Jinja would also reject and for unknown templates.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>

#include "core/error.h"
#include "tokenizer/chat_template.h"
#include "tokenizer_test_util.h"

namespace deepmoe {
namespace {

TEST(ChatTemplate, GoldenConversationsRenderExactly) {
  ChatTemplate tmpl = ChatTemplate::from_tokenizer_config(test::tokenizer_dir());
  EXPECT_EQ(tmpl.name(), "deepseek-v3");
  std::ifstream in(test::golden_dir() + "/chat_template_deepseek_v3.jsonl");
  std::string line;
  size_t total = 0, passed = 0;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    auto messages = parse_chat_messages(j["messages"].dump());
    std::string rendered = tmpl.render(messages, j["add_generation_prompt"].get<bool>());
    ++total;
    if (rendered == j["rendered"].get<std::string>()) {
      ++passed;
    } else {
      ADD_FAILURE() << "case " << total - 1 << ": got " << nlohmann::json(rendered).dump();
    }
  }
  EXPECT_EQ(total, 300u);
  EXPECT_EQ(passed, total);
}

TEST(ChatTemplate, SystemPromptsJoinAndGenerationPrompt) {
  ChatTemplate tmpl = ChatTemplate::from_tokenizer_config(test::tokenizer_dir());
  auto m = parse_chat_messages(
      R"([{"role":"system","content":"A"},{"role":"user","content":"hi"},{"role":"system","content":"B"}])");
  EXPECT_EQ(tmpl.render(m, true), "<｜begin▁of▁sentence｜>A\n\nB<｜User｜>hi<｜Assistant｜>");
  EXPECT_EQ(tmpl.render(m, false), "<｜begin▁of▁sentence｜>A\n\nB<｜User｜>hi");
}

TEST(ChatTemplate, ToolOutputsCloseBeforeAssistantAndSuppressGenerationPrompt) {
  ChatTemplate tmpl = ChatTemplate::from_tokenizer_config(test::tokenizer_dir());
  auto m = parse_chat_messages(R"([{"role":"user","content":"q"},
    {"role":"assistant","content":null,"tool_calls":[{"type":"function","function":{"name":"f","arguments":"{}"}}]},
    {"role":"tool","content":"r1"},{"role":"tool","content":"r2"}])");
  EXPECT_EQ(tmpl.render(m, true),
            "<｜begin▁of▁sentence｜><｜User｜>q<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function"
            "<｜tool▁sep｜>f\n```json\n{}\n```<｜tool▁call▁end｜><｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>r1"
            "<｜tool▁output▁end｜>\n<｜tool▁output▁begin｜>r2<｜tool▁output▁end｜><｜tool▁outputs▁end｜>");
}

TEST(ChatTemplate, UnknownTemplateIsAnErrorNamingItsFingerprint) {
  try {
    ChatTemplate::from_source("{{ messages }}", "<s>");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unsupported chat template (fingerprint"), std::string::npos) << e.what();
  }
}

TEST(ChatTemplate, MalformedMessagesAreNamedErrors) {
  auto expect_error = [](const char* json, const char* needle) {
    try {
      parse_chat_messages(json);
      ADD_FAILURE() << "expected an error for " << json;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(R"({"role":"user"})", "expected an array");
  expect_error(R"([{"content":"x"}])", "messages[0].role");
  expect_error(R"([{"role":"user"}])", "missing content");
  expect_error(R"([{"role":"user","content":[1]}])", "content must be a string");
  expect_error(R"([{"role":"assistant","content":null}])", "needs tool_calls");
  expect_error(R"([{"role":"assistant","content":null,"tool_calls":[{"type":"function","function":{"name":"f"}}]}])",
               "messages[0].tool_calls[0].function.arguments");
  expect_error(R"([{"role":"user","content":"x"},)", "malformed JSON");
  // Null content where the template concatenates it: Jinja raises, so does render().
  ChatTemplate tmpl = ChatTemplate::from_tokenizer_config(test::tokenizer_dir());
  auto m = parse_chat_messages(R"([{"role":"user","content":null}])");
  EXPECT_THROW(tmpl.render(m, true), Error);
}

TEST(ChatTemplate, MissingConfigIsAnError) {
  EXPECT_THROW(ChatTemplate::from_tokenizer_config("/nonexistent-dir"), Error);
}

}  // namespace
}  // namespace deepmoe
