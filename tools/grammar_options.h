// Constrained output for the commands that generate: `--json-schema FILE|JSON`, `--grammar FILE` (GBNF) or
// `--json` (any JSON object), compiled once before the model loads so a bad schema fails fast with the
// keyword and its path named.
#pragma once

#include <memory>
#include <string>

#include "grammar/grammar.h"

namespace CLI {
class App;
}

namespace deepmoe::tools {

struct GrammarArgs {
  std::string json_schema;  // a file, or the schema itself when it starts with '{'
  std::string gbnf_file;
  bool any_json = false;
  bool schema_strict = false;   // additionalProperties defaults to false (OpenAI's strict mode)
  bool schema_lenient = false;  // keywords the compiler cannot enforce: a warning instead of an error
  bool token_healing = false;   // back off the prompt's last token(s) and constrain the output to start with them
};

void add_grammar_options(CLI::App& app, GrammarArgs& args);

// The grammar the options ask for, or null when none was given. Throws deepmoe::Error naming the option and
// the problem (an unreadable file, invalid JSON, an unsupported keyword with its JSON pointer, a GBNF syntax
// error with its line and column). Warnings (lenient mode) go to stderr.
std::shared_ptr<const grammar::Grammar> compile_grammar_args(const GrammarArgs& args);

}  // namespace deepmoe::tools
