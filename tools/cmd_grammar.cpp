// `deepmoe grammar`: compiles a JSON Schema (--schema), a GBNF grammar (--gbnf) or the any-JSON grammar
// (--json) against the model's vocabulary and, with --check FILE.jsonl (lines {"data": <json value>}), forces
// each instance's compact serialization through the matcher token by token (its canonical tokenization):
// one line {"index","accepted","masks","mask_us_max"} per instance — accepted means every token was in its
// mask and EOS was allowed at the end — then a summary line with the compile time and mask-time percentiles.
// This is how schema support and mask speed are measured on real schemas.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include "command.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "grammar/gbnf_parser.h"
#include "grammar/grammar_matcher.h"
#include "grammar/json_schema_compiler.h"
#include "grammar/token_masker.h"
#include "tokenizer/tokenizer.h"

namespace deepmoe::tools {
namespace {

using Clock = std::chrono::steady_clock;

struct GrammarOptions {
  std::string schema_file, gbnf_file, check_file, model_dir;
  bool any_json = false, lenient = false, strict = false, print = false;
  std::string whitespace = "compact";
};

// A folder or an unreadable file is an error naming the path (core/mapped_file.h).
std::string read_file(const std::string& path) { return read_text_file(path); }

double micros(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::micro>(b - a).count(); }

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  size_t k = std::min(v.size() - 1, size_t(p * double(v.size())));
  std::nth_element(v.begin(), v.begin() + std::ptrdiff_t(k), v.end());
  return v[k];
}

// The vocabulary as byte spellings: special tokens and ids past the tokenizer (padding up to the model's
// vocab_size from config.json) have none.
std::shared_ptr<const grammar::TokenTrie> vocabulary(const Tokenizer& tok, const std::string& dir) {
  int32_t size = tok.vocab_size();
  std::ifstream cfg(dir + "/config.json");
  if (cfg) {
    nlohmann::json j = nlohmann::json::parse(cfg, nullptr, false);
    if (j.is_object() && j.contains("vocab_size") && j["vocab_size"].is_number_integer())
      size = std::max(size, j["vocab_size"].get<int32_t>());
  }
  std::vector<std::string> spellings(static_cast<size_t>(size));
  for (int32_t id = 0; id < tok.vocab_size(); ++id)
    if (!tok.is_special(id)) spellings[size_t(id)] = tok.token_bytes(id);
  return std::make_shared<grammar::TokenTrie>(std::move(spellings), tok.eos_id());
}

void run(const GrammarOptions& opt) {
  int sources = int(!opt.schema_file.empty()) + int(!opt.gbnf_file.empty()) + int(opt.any_json);
  if (sources != 1) throw Error("grammar: give exactly one of --schema FILE, --gbnf FILE, --json");
  std::string dir = opt.model_dir.empty() ? default_model_dir() : opt.model_dir;
  auto tok = Tokenizer::load(dir);
  auto trie = vocabulary(*tok, dir);

  auto t0 = Clock::now();
  grammar::Grammar g;
  std::vector<std::string> warnings;
  if (!opt.schema_file.empty()) {
    grammar::JsonSchemaOptions o;
    o.lenient = opt.lenient;
    o.additional_properties_default = !opt.strict;
    o.whitespace = opt.whitespace == "flexible" ? grammar::Whitespace::flexible : grammar::Whitespace::compact;
    std::string text = read_file(opt.schema_file);
    try {
      g = grammar::compile_json_schema(text, o, &warnings);
    } catch (const Error& e) {
      throw Error(opt.schema_file + ": " + e.message());
    }
  } else if (!opt.gbnf_file.empty()) {
    std::string text = read_file(opt.gbnf_file);
    try {
      g = grammar::parse_gbnf(text);
    } catch (const Error& e) {
      throw Error(opt.gbnf_file + ": " + e.message());
    }
  } else {
    g = grammar::any_json_grammar(opt.whitespace == "flexible" ? grammar::Whitespace::flexible
                                                               : grammar::Whitespace::compact);
  }
  auto automaton = std::make_shared<grammar::PushdownAutomaton>(std::move(g));
  auto masker = std::make_shared<grammar::TokenMasker>(automaton, trie);
  double compile_us = micros(t0, Clock::now());
  for (const std::string& w : warnings) std::fprintf(stderr, "deepmoe: warning: %s\n", w.c_str());
  if (opt.print) std::fputs(grammar::to_string(automaton->grammar()).c_str(), stdout);

  std::vector<double> mask_us;
  size_t accepted = 0, rejected = 0;
  if (!opt.check_file.empty()) {
    std::istringstream in(read_file(opt.check_file));
    grammar::TokenBitmask mask(grammar::mask_words(trie->vocab_size()));
    std::string line;
    size_t line_no = 0, index = 0;
    while (std::getline(in, line)) {
      ++line_no;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      nlohmann::ordered_json j = nlohmann::ordered_json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains("data"))
        throw Error(opt.check_file + ":" + std::to_string(line_no) + ": expected {\"data\": <json value>}");
      std::vector<int32_t> ids = tok->encode(j["data"].dump(), false, false);
      ids.push_back(trie->eos_id());
      grammar::GrammarMatcher m(automaton, masker);
      bool ok = true;
      double worst = 0;
      size_t masks = 0;
      for (int32_t id : ids) {
        auto a = Clock::now();
        m.fill_mask(mask);
        double us = micros(a, Clock::now());
        mask_us.push_back(us);
        worst = std::max(worst, us);
        ++masks;
        if (!grammar::mask_test(mask, id) || !m.accept_token(id)) {
          ok = false;
          break;
        }
      }
      ok = ok && m.is_terminated();
      (ok ? accepted : rejected)++;
      nlohmann::ordered_json out{{"index", index++}, {"accepted", ok}, {"masks", masks}, {"mask_us_max", worst}};
      std::printf("%s\n", out.dump().c_str());
    }
  }
  nlohmann::ordered_json summary{{"compile_us", compile_us},
                                 {"mask_us_p50", percentile(mask_us, 0.50)},
                                 {"p99", percentile(mask_us, 0.99)},
                                 {"p999", percentile(mask_us, 0.999)},
                                 {"accepted", accepted},
                                 {"rejected", rejected},
                                 {"masks", mask_us.size()},
                                 {"mask_cache_hits", masker->stats().cache_hits},
                                 {"position_tables", masker->stats().position_tables}};
  std::printf("%s\n", summary.dump().c_str());
}

CommandRegistration registration{
    {"grammar", "Compile a JSON Schema / GBNF grammar to token masks; --check instances and time the masks",
     [](CLI::App& sub) {
       auto opt = std::make_shared<GrammarOptions>();
       sub.add_option("--schema", opt->schema_file, "JSON Schema file (draft 2020-12 subset)");
       sub.add_option("--gbnf", opt->gbnf_file, "GBNF grammar file (llama.cpp syntax, start rule 'root')");
       sub.add_flag("--json", opt->any_json, "Any JSON value");
       sub.add_option("--check", opt->check_file, "JSONL file of {\"data\": <value>} instances to force through");
       sub.add_option("-m,--model", opt->model_dir, "Model folder with tokenizer.json (default: bundled model)");
       sub.add_flag("--lenient", opt->lenient, "Unsupported schema keywords are warnings (and ignored), not errors");
       sub.add_flag("--strict", opt->strict, "additionalProperties defaults to false (OpenAI strict mode)");
       sub.add_option("--whitespace", opt->whitespace, "compact (default) or flexible")
           ->check(CLI::IsMember({"compact", "flexible"}));
       sub.add_flag("--print", opt->print, "Print the compiled grammar");
       sub.callback([opt] { run(*opt); });
     }}};

}  // namespace
}  // namespace deepmoe::tools
