// `deepmoe template`: renders conversations with the model's chat template. --jsonl FILE reads one
// {"messages": [...], "add_generation_prompt": bool} per line and writes one {"rendered": "..."} per line;
// without it a JSON array of messages is read from stdin and the prompt text printed.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>
#include <iterator>
#include <memory>
#include <sstream>

#include "checked_output.h"
#include "command.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "tokenizer/chat_template.h"

namespace deepmoe::tools {
namespace {

struct TemplateOptions {
  std::string model_dir;
  std::string jsonl;
  bool generation_prompt = false;
};

void render_jsonl(const ChatTemplate& tmpl, const std::string& path) {
  std::istringstream in(read_text_file(path));
  std::string line, out;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::string where = path + ":" + std::to_string(line_no) + ": ";
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw Error(where + "malformed JSON: " + e.what());
    }
    if (!j.is_object() || !j.contains("messages")) throw Error(where + "expected {\"messages\": [...]}");
    bool agp = false;
    if (j.contains("add_generation_prompt")) {
      if (!j["add_generation_prompt"].is_boolean()) throw Error(where + "add_generation_prompt must be true or false");
      agp = j["add_generation_prompt"].get<bool>();
    }
    try {
      auto messages = parse_chat_messages(j["messages"].dump());
      out += nlohmann::json{{"rendered", tmpl.render(messages, agp)}}.dump();
      out += '\n';
    } catch (const Error& e) {
      throw Error(where + e.what());
    }
  }
  write_stdout(out);
}

void run(const TemplateOptions& opt) {
  std::string dir = opt.model_dir.empty() ? default_model_dir() : opt.model_dir;
  ChatTemplate tmpl = ChatTemplate::from_tokenizer_config(dir);
  if (!opt.jsonl.empty()) {
    render_jsonl(tmpl, opt.jsonl);
    return;
  }
  std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  std::string rendered = tmpl.render(parse_chat_messages(text), opt.generation_prompt);
  write_stdout(rendered);
}

CommandRegistration registration{
    {"template", "Render conversations with the model's chat template (stdin JSON array, or --jsonl FILE)",
     [](CLI::App& sub) {
       auto opt = std::make_shared<TemplateOptions>();
       sub.add_option("-m,--model", opt->model_dir, "Model folder with tokenizer_config.json (default: bundled)");
       sub.add_option("--jsonl", opt->jsonl,
                      "Read {\"messages\": [...], \"add_generation_prompt\": ...} lines, write {\"rendered\": ...}");
       sub.add_flag("-g,--generation-prompt", opt->generation_prompt,
                    "Append the assistant prefix (stdin mode; --jsonl lines carry their own)");
       sub.callback([opt] { run(*opt); });
     }}};

}  // namespace
}  // namespace deepmoe::tools
