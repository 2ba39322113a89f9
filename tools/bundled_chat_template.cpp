#include "bundled_chat_template.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mapped_file.h"

namespace deepmoe::tools {

std::string chat_template_of(const std::string& dir) {
  if (dir.empty()) return "";
  const std::string path = dir + "/tokenizer_config.json";
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(read_text_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("malformed JSON: ") + e.what(), {path, "", ""});
  }
  if (!config.is_object() || !config.contains("chat_template") || !config["chat_template"].is_string())
    throw Error("no chat_template string", {path, "", "chat_template"});
  return config["chat_template"].get<std::string>();
}

}  // namespace deepmoe::tools
