#include "grammar_options.h"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "grammar/gbnf_parser.h"
#include "grammar/json_schema_compiler.h"

namespace deepmoe::tools {
namespace {

std::string read_text_file(const std::string& option, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(option + ": cannot open " + path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// An inline schema starts with '{' (or is a boolean schema); anything else names a file.
bool is_inline_schema(const std::string& arg) {
  const size_t i = arg.find_first_not_of(" \t\r\n");
  if (i == std::string::npos) return false;
  return arg[i] == '{' || arg.substr(i) == "true" || arg.substr(i) == "false";
}

}  // namespace

void add_grammar_options(CLI::App& app, GrammarArgs& args) {
  auto* schema = app.add_option("--json-schema", args.json_schema,
                                "Constrain the output to JSON valid under this JSON Schema (draft 2020-12 subset; a "
                                "file, or the schema itself when it starts with '{'). Keywords that cannot be "
                                "enforced are errors naming the keyword and its path")
                     ->option_text("FILE|JSON");
  auto* gbnf = app.add_option("--grammar", args.gbnf_file,
                              "Constrain the output to a GBNF grammar (llama.cpp's format; the start rule is root)")
                   ->option_text("FILE");
  auto* json = app.add_flag("--json", args.any_json, "Constrain the output to a JSON object (any keys and values)");
  schema->excludes(gbnf)->excludes(json);
  gbnf->excludes(json);
  app.add_flag("--schema-strict", args.schema_strict,
               "With --json-schema: objects allow only the properties they list unless additionalProperties says "
               "otherwise (OpenAI's strict mode)")
      ->needs(schema);
  app.add_flag("--schema-lenient", args.schema_lenient,
               "With --json-schema: keywords that cannot be enforced are ignored with a warning instead of an error")
      ->needs(schema);
  app.add_flag("--token-healing", args.token_healing,
               "When the prompt ends inside what would be a longer token (a trailing space, 'http:' before '//', a "
               "partial word), back its last token(s) off and make the output start with their text, so the model "
               "can choose the token that spans the boundary; the text is not printed twice");
}

std::shared_ptr<const grammar::Grammar> compile_grammar_args(const GrammarArgs& args) {
  if (!args.json_schema.empty() || args.any_json) {
    const bool inline_schema = args.any_json || is_inline_schema(args.json_schema);
    const std::string where = args.any_json ? "--json" : inline_schema ? "--json-schema" : "--json-schema " + args.json_schema;
    const std::string text = args.any_json ? std::string(R"({"type":"object"})")
                             : inline_schema ? args.json_schema
                                             : read_text_file("--json-schema", args.json_schema);
    grammar::JsonSchemaOptions options;
    options.lenient = args.schema_lenient;
    options.additional_properties_default = !args.schema_strict;
    std::vector<std::string> warnings;
    try {
      auto g = std::make_shared<grammar::Grammar>(grammar::compile_json_schema(text, options, &warnings));
      if (grammar::matches_nothing(*g))
        throw Error("the schema accepts no value at all (false, an empty enum, or contradicting branches)");
      for (const std::string& w : warnings) std::fprintf(stderr, "deepmoe: warning: %s: %s\n", where.c_str(), w.c_str());
      return g;
    } catch (const Error& e) {
      throw Error(where + ": " + e.message());
    }
  }
  if (!args.gbnf_file.empty()) {
    const std::string text = read_text_file("--grammar", args.gbnf_file);
    try {
      auto g = std::make_shared<grammar::Grammar>(grammar::parse_gbnf(text));
      if (grammar::matches_nothing(*g)) throw Error("the grammar matches no text at all");
      return g;
    } catch (const Error& e) {
      throw Error("--grammar " + args.gbnf_file + ": " + e.message());
    }
  }
  return nullptr;
}

}  // namespace deepmoe::tools
