// `deepmoe tokenize`: the model's tokenizer from the command line. Stdin text → one "id<TAB>piece" line per
// token; or --jsonl FILE with one {"text": ...} per line → one {"ids": [...]} per line (the golden files' format,
// so any such file can be checked against HF).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>

#include "command.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "tokenizer/tokenizer.h"

namespace deepmoe::tools {
namespace {

struct TokenizeOptions {
  std::string model_dir;
  std::string jsonl;
  bool add_special = false;
  bool no_parse_special = false;
  int threads = 0;
};

void tokenize_jsonl(const Tokenizer& tok, const TokenizeOptions& opt) {
  std::ifstream in(opt.jsonl, std::ios::binary);
  if (!in) throw Error("cannot open " + opt.jsonl);
  std::vector<std::string> texts;
  std::string line;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw Error(opt.jsonl + ":" + std::to_string(line_no) + ": malformed JSON: " + e.what());
    }
    if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
      throw Error(opt.jsonl + ":" + std::to_string(line_no) + ": expected {\"text\": \"...\"}");
    texts.push_back(j["text"].get<std::string>());
  }
  ThreadPool pool(opt.threads);
  auto all = tok.encode_batch(texts, opt.add_special, !opt.no_parse_special, &pool);
  std::string out;
  for (const auto& ids : all) {
    out += nlohmann::json{{"ids", ids}}.dump();
    out += '\n';
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
}

void tokenize_stdin(const Tokenizer& tok, const TokenizeOptions& opt) {
  std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  for (int32_t id : tok.encode(text, opt.add_special, !opt.no_parse_special)) {
    std::printf("%d\t%s\n", id, tok.token_piece(id).c_str());
  }
}

void run(const TokenizeOptions& opt) {
  std::string dir = opt.model_dir.empty() ? default_model_dir() : opt.model_dir;
  auto tok = Tokenizer::load(dir);
  if (!opt.jsonl.empty()) {
    tokenize_jsonl(*tok, opt);
  } else {
    tokenize_stdin(*tok, opt);
  }
}

CommandRegistration registration{
    {"tokenize", "Print token ids/pieces of stdin text, or encode a JSONL file of {\"text\": ...}",
     [](CLI::App& sub) {
       auto opt = std::make_shared<TokenizeOptions>();
       sub.add_option("-m,--model", opt->model_dir, "Model folder with tokenizer.json (default: bundled model)");
       sub.add_option("--jsonl", opt->jsonl, "Read {\"text\": ...} lines, write {\"ids\": [...]} lines");
       sub.add_flag("--add-special", opt->add_special, "Add BOS/EOS as tokenizer_config.json says");
       sub.add_flag("--no-parse-special", opt->no_parse_special, "Encode special-token text as plain text");
       sub.add_option("-t,--threads", opt->threads, "Threads for --jsonl (default: all)")->check(CLI::NonNegativeNumber);
       sub.callback([opt] { run(*opt); });
     }}};

}  // namespace
}  // namespace deepmoe::tools
