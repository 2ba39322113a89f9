// Chat templates: the prompt text a conversation becomes. HF ships them as Jinja2 source in
// tokenizer_config.json ("chat_template"); deepmoe renders known templates natively instead of interpreting
// Jinja (templates are code — the reliability checklist §1 T3 — and the few deepmoe serves are fixed). A template
// is identified by a fingerprint of its exact source text; an unknown template is an error naming its
// fingerprint, never a guess.
//
// Supported: "deepseek-v3" — DeepSeek-V3's template (system prompts joined by a blank line after BOS, user /
// assistant turns, tool calls and tool outputs, add_generation_prompt), reproduced to the byte, including its
// quirks (after the first tool-call message every later call is rendered in the "continuation" form and closes
// the call list), as tests/tokenizer's golden file (rendered by Jinja2) checks.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace deepmoe {

struct ToolCall {
  std::string type = "function";
  std::string name;
  std::string arguments;  // JSON text, rendered verbatim
};

struct ChatMessage {
  std::string role;                    // system, user, assistant, tool (others render nothing, as in Jinja)
  std::optional<std::string> content;  // nullopt = JSON null (an assistant turn that only calls tools)
  std::vector<ToolCall> tool_calls;
};

class ChatTemplate {
 public:
  // From dir/tokenizer_config.json: "chat_template" and "bos_token". Throws Error naming the file when the
  // file or key is missing, or the template is not one deepmoe knows.
  static ChatTemplate from_tokenizer_config(const std::string& dir);
  // From the template source and the BOS token text it prints.
  static ChatTemplate from_source(std::string_view source, std::string bos_token);

  // The prompt for `messages`; add_generation_prompt appends the assistant prefix. Throws Error for messages the
  // Jinja template would fail on (missing or non-string content, null tool_calls).
  std::string render(std::span<const ChatMessage> messages, bool add_generation_prompt) const;

  const std::string& name() const { return name_; }

  // 64-bit FNV-1a of the template source: how templates are recognized.
  static uint64_t fingerprint(std::string_view source);

 private:
  ChatTemplate(std::string name, std::string bos) : name_(std::move(name)), bos_(std::move(bos)) {}
  std::string name_;
  std::string bos_;
};

// Messages from a JSON array in the OpenAI / HF format ([{"role": ..., "content": ..., "tool_calls":
// [{"type": ..., "function": {"name": ..., "arguments": "..."}}]}]). Throws Error naming the offending field.
std::vector<ChatMessage> parse_chat_messages(std::string_view json_array);

}  // namespace deepmoe
