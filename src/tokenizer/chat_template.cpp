#include "tokenizer/chat_template.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "core/mapped_file.h"

namespace deepmoe {
namespace {

using json = nlohmann::json;

// Fingerprint of DeepSeek-V3's chat_template (deepseek-ai/DeepSeek-V3 tokenizer_config.json, bundled in
// assets/tokenizer).
constexpr uint64_t kDeepSeekV3Fingerprint = 0xebe3604156dc466aULL;

std::string hex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

[[noreturn]] void fail_message(size_t index, const std::string& what) {
  throw Error(what, ErrorContext{"", "", "messages[" + std::to_string(index) + "]"});
}

const std::string& content_of(const ChatMessage& m, size_t index) {
  if (!m.content) fail_message(index, "content of a " + m.role + " message must be a string, not null");
  return *m.content;
}

// DeepSeek-V3's template, statement by statement (the Jinja source is in assets/tokenizer/tokenizer_config.json).
std::string render_deepseek_v3(const std::string& bos, std::span<const ChatMessage> messages,
                               bool add_generation_prompt) {
  bool is_first = false, is_tool = false, is_output_first = true, is_first_sp = true;
  std::string system_prompt;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role != "system") continue;
    if (!is_first_sp) system_prompt += "\n\n";
    system_prompt += content_of(messages[i], i);
    is_first_sp = false;
  }
  std::string out = bos + system_prompt;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "user") {
      is_tool = false;
      out += "<｜User｜>" + content_of(m, i);
    }
    if (m.role == "assistant" && !m.content) {
      is_tool = false;
      for (const ToolCall& tool : m.tool_calls) {
        std::string call = tool.type + "<｜tool▁sep｜>" + tool.name + "\n```json\n" + tool.arguments +
                           "\n```<｜tool▁call▁end｜>";
        if (!is_first) {
          out += "<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>" + call;
          is_first = true;
        } else {
          out += "\n<｜tool▁call▁begin｜>" + call + "<｜tool▁calls▁end｜><｜end▁of▁sentence｜>";
        }
      }
    }
    if (m.role == "assistant" && m.content) {
      if (is_tool) {
        out += "<｜tool▁outputs▁end｜>" + *m.content + "<｜end▁of▁sentence｜>";
        is_tool = false;
      } else {
        out += "<｜Assistant｜>" + *m.content + "<｜end▁of▁sentence｜>";
      }
    }
    if (m.role == "tool") {
      is_tool = true;
      if (is_output_first) {
        out += "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>" + content_of(m, i) + "<｜tool▁output▁end｜>";
        is_output_first = false;
      } else {
        out += "\n<｜tool▁output▁begin｜>" + content_of(m, i) + "<｜tool▁output▁end｜>";
      }
    }
  }
  if (is_tool) out += "<｜tool▁outputs▁end｜>";
  if (add_generation_prompt && !is_tool) out += "<｜Assistant｜>";
  return out;
}

}  // namespace

uint64_t ChatTemplate::fingerprint(std::string_view source) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : source) {
    h ^= static_cast<uint8_t>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

ChatTemplate ChatTemplate::from_source(std::string_view source, std::string bos_token) {
  uint64_t f = fingerprint(source);
  if (f == kDeepSeekV3Fingerprint) return ChatTemplate("deepseek-v3", std::move(bos_token));
  throw Error("unsupported chat template (fingerprint " + hex(f) +
              "); deepmoe renders only known templates natively: deepseek-v3");
}

ChatTemplate ChatTemplate::from_tokenizer_config(const std::string& dir) {
  std::string path = (std::filesystem::path(dir) / "tokenizer_config.json").string();
  if (!std::filesystem::exists(path)) throw Error("no tokenizer_config.json in model folder " + dir, {path, "", ""});
  try {
    json config = json::parse(read_text_file(path));
    auto it = config.find("chat_template");
    if (it == config.end() || !it->is_string())
      throw Error("missing chat_template (a string)", {"", "", "chat_template"});
    std::string bos;
    auto b = config.find("bos_token");
    if (b != config.end() && b->is_string()) bos = b->get<std::string>();
    if (b != config.end() && b->is_object() && b->contains("content") && (*b)["content"].is_string())
      bos = (*b)["content"].get<std::string>();
    return from_source(it->get<std::string>(), bos);
  } catch (const json::exception& e) {
    throw Error(std::string("malformed JSON: ") + e.what(), {path, "", ""});
  } catch (const Error& e) {
    throw e.with_file(path);
  }
}

std::string ChatTemplate::render(std::span<const ChatMessage> messages, bool add_generation_prompt) const {
  return render_deepseek_v3(bos_, messages, add_generation_prompt);
}

std::vector<ChatMessage> parse_chat_messages(std::string_view json_array) {
  json j;
  try {
    j = json::parse(json_array);
  } catch (const json::exception& e) {
    throw Error(std::string("malformed JSON: ") + e.what(), {"", "", "messages"});
  }
  if (!j.is_array()) throw Error("expected an array of messages", {"", "", "messages"});
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < j.size(); ++i) {
    const json& m = j[i];
    std::string field = "messages[" + std::to_string(i) + "]";
    auto bad = [&](const std::string& sub, const std::string& what) {
      throw Error(what, {"", "", field + sub});
    };
    if (!m.is_object()) bad("", "expected an object");
    ChatMessage msg;
    if (!m.contains("role") || !m["role"].is_string()) bad(".role", "expected a string");
    msg.role = m["role"].get<std::string>();
    bool known = msg.role == "system" || msg.role == "user" || msg.role == "assistant" || msg.role == "tool";
    if (m.contains("content") && m["content"].is_string()) {
      msg.content = m["content"].get<std::string>();
    } else if (m.contains("content") && m["content"].is_null()) {
      msg.content = std::nullopt;
    } else if (known) {
      // Jinja fails on these too (Undefined or a list concatenated to a string).
      bad(".content", m.contains("content") ? "content must be a string or null" : "missing content");
    }
    if (m.contains("tool_calls")) {
      const json& calls = m["tool_calls"];
      if (!calls.is_array()) bad(".tool_calls", "expected an array");
      for (size_t k = 0; k < calls.size(); ++k) {
        std::string cf = ".tool_calls[" + std::to_string(k) + "]";
        const json& c = calls[k];
        if (!c.is_object() || !c.contains("function") || !c["function"].is_object())
          bad(cf, "expected {\"type\": ..., \"function\": {\"name\": ..., \"arguments\": ...}}");
        ToolCall call;
        if (!c.contains("type") || !c["type"].is_string()) bad(cf + ".type", "expected a string");
        call.type = c["type"].get<std::string>();
        const json& f = c["function"];
        if (!f.contains("name") || !f["name"].is_string()) bad(cf + ".function.name", "expected a string");
        if (!f.contains("arguments") || !f["arguments"].is_string())
          bad(cf + ".function.arguments", "expected a string (JSON text)");
        call.name = f["name"].get<std::string>();
        call.arguments = f["arguments"].get<std::string>();
        msg.tool_calls.push_back(std::move(call));
      }
    } else if (msg.role == "assistant" && !msg.content) {
      bad(".tool_calls", "an assistant message with null content needs tool_calls");
    }
    out.push_back(std::move(msg));
  }
  return out;
}

}  // namespace deepmoe
