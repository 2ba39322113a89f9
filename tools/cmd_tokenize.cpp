// `deepmoe tokenize`: the model's tokenizer from the command line. Stdin text → one "id<TAB>text" line per
// token (its bytes, escaped to stay on one line; --pieces: tokenizer.json's spelling instead); or --jsonl FILE
// with one {"text": ...} per line → one {"ids": [...]} per line (the golden files' format, so any such file can
// be checked against HF).
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
#include "core/thread_pool.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace deepmoe::tools {
namespace {

struct TokenizeOptions {
  std::string model_dir;
  std::string jsonl;
  bool add_special = false;
  bool no_parse_special = false;
  bool pieces = false;
  int threads = 0;
};

void tokenize_jsonl(const Tokenizer& tok, const TokenizeOptions& opt) {
  std::istringstream in(read_text_file(opt.jsonl));
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
  write_stdout(out);
}

// A token's bytes as readable text on one line: valid UTF-8 as is; backslash, tab, newline and carriage return as
// \\ \t \n \r; other control bytes and bytes that are not (yet) a whole UTF-8 character — a token may hold part
// of one — as \xNN. Unescaping the column gives back the exact bytes.
std::string escaped_bytes(std::string_view bytes) {
  std::string out;
  char hex[8];
  for (size_t i = 0; i < bytes.size();) {
    const unsigned char c = static_cast<unsigned char>(bytes[i]);
    uint32_t cp = 0;
    const size_t n = c < 0x80 ? 1 : utf8::decode(bytes.substr(i), &cp);
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (n == 0 || c < 0x20 || c == 0x7f) {
      std::snprintf(hex, sizeof hex, "\\x%02X", c);
      out += hex;
    } else {
      out.append(bytes.substr(i, n));
      i += n;
      continue;
    }
    ++i;
  }
  return out;
}

void tokenize_stdin(const Tokenizer& tok, const TokenizeOptions& opt) {
  std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  if (std::cin.bad()) throw Error("cannot read standard input");
  std::string out;
  for (int32_t id : tok.encode(text, opt.add_special, !opt.no_parse_special)) {
    out += std::to_string(id);
    out += '\t';
    out += opt.pieces ? tok.token_piece(id) : escaped_bytes(tok.token_bytes(id));
    out += '\n';
  }
  write_stdout(out);
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
    {"tokenize", "Print the token ids of stdin text with each token's text, or encode a JSONL file of "
                 "{\"text\": ...}",
     [](CLI::App& sub) {
       auto opt = std::make_shared<TokenizeOptions>();
       sub.add_option("-m,--model", opt->model_dir, "Model folder with tokenizer.json (default: bundled model)");
       sub.add_option("--jsonl", opt->jsonl, "Read {\"text\": ...} lines, write {\"ids\": [...]} lines");
       sub.add_flag("--add-special", opt->add_special, "Add BOS/EOS as tokenizer_config.json says");
       sub.add_flag("--no-parse-special", opt->no_parse_special, "Encode special-token text as plain text");
       sub.add_flag("--pieces", opt->pieces,
                    "Show each token as tokenizer.json spells it (byte-level alphabet: \"Ġ\" for a space) instead "
                    "of its text");
       sub.add_option("-t,--threads", opt->threads, "Threads for --jsonl (default: all)")->check(CLI::NonNegativeNumber);
       sub.callback([opt] { run(*opt); });
     }}};

}  // namespace
}  // namespace deepmoe::tools
