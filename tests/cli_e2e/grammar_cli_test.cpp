// Constrained output on the real `deepmoe` binary with the tiny model: --json-schema (inline or a file),
// --json and --grammar give output in the language (parsed here), with and without --speculative mtp; bad
// schemas and grammars are errors that name the problem.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <regex>
#include <string>

#include "cli_test_util.h"

namespace deepmoe::cli_test {
namespace {

const std::string kSchema =
    R"({"type":"object","properties":{"name":{"type":"string","maxLength":8},"n":{"type":"integer","minimum":1,"maximum":9},)"
    R"("tags":{"type":"array","items":{"enum":["a","b"]},"maxItems":3}},"required":["name","n","tags"],"additionalProperties":false})";

CommandResult generate(const std::string& extra, int max_tokens = 120) {
  return deepmoe("generate -m " + quote(kModel) + " -p 'Data:' -n " + std::to_string(max_tokens) +
                 " --temperature 1 " + extra);
}

// maxLength counts code points.
size_t code_points(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

TEST(CliGrammar, JsonSchemaOutputValidates) {
  for (const std::string& extra : {std::string(""), std::string("--speculative mtp --draft-tokens 2")}) {
    for (int seed = 1; seed <= 4; ++seed) {
      const CommandResult r = generate("--seed " + std::to_string(seed) + " --json-schema " + quote(kSchema) + " " + extra);
      ASSERT_EQ(r.code, 0) << r.err;
      EXPECT_NE(r.err.find("finish eos"), std::string::npos) << r.err;
      const auto j = nlohmann::json::parse(r.out, nullptr, false);
      ASSERT_TRUE(j.is_object()) << r.out;
      EXPECT_EQ(j.size(), 3u) << r.out;
      EXPECT_TRUE(j["name"].is_string() && code_points(j["name"].get<std::string>()) <= 8) << r.out;
      EXPECT_TRUE(j["n"].is_number_integer() && j["n"] >= 1 && j["n"] <= 9) << r.out;
      EXPECT_TRUE(j["tags"].is_array() && j["tags"].size() <= 3) << r.out;
    }
  }
}

TEST(CliGrammar, SchemaFromFileJsonModeAndGbnf) {
  const fs::path dir = scratch_dir();
  std::ofstream(dir / "schema.json") << kSchema;
  std::ofstream(dir / "answer.gbnf") << "root ::= (\"yes\" | \"no\") \", \" [0-9]{1,2}\n";
  const CommandResult file = generate("--seed 5 --json-schema " + quote((dir / "schema.json").string()));
  ASSERT_EQ(file.code, 0) << file.err;
  EXPECT_TRUE(nlohmann::json::parse(file.out, nullptr, false).is_object()) << file.out;
  const CommandResult gbnf = generate("--seed 6 --grammar " + quote((dir / "answer.gbnf").string()));
  ASSERT_EQ(gbnf.code, 0) << gbnf.err;
  EXPECT_TRUE(std::regex_match(gbnf.out, std::regex("(yes|no), [0-9]{1,2}"))) << gbnf.out;
  for (int seed = 1; seed <= 3; ++seed) {
    const CommandResult json = generate("--seed " + std::to_string(seed) + " --json", 400);
    ASSERT_EQ(json.code, 0) << json.err;
    if (json.err.find("finish eos") != std::string::npos)
      EXPECT_TRUE(nlohmann::json::parse(json.out, nullptr, false).is_object()) << json.out;
    else
      EXPECT_EQ(json.out.substr(0, 1), "{") << json.out;
  }
  fs::remove_all(dir);
}

TEST(CliGrammar, BadSchemasAndGrammarsNameTheProblem) {
  const CommandResult unsupported = generate(R"(--json-schema '{"type":"object","properties":{"a":{"not":{}}}}')");
  EXPECT_NE(unsupported.code, 0);
  EXPECT_NE(unsupported.err.find("'not' at /properties/a"), std::string::npos) << unsupported.err;
  const CommandResult invalid = generate(R"(--json-schema '{"type":')");
  EXPECT_NE(invalid.code, 0);
  EXPECT_NE(invalid.err.find("--json-schema"), std::string::npos) << invalid.err;
  const CommandResult missing = generate("--json-schema no-such-schema.json");
  EXPECT_NE(missing.code, 0);
  EXPECT_NE(missing.err.find("no-such-schema.json"), std::string::npos) << missing.err;
  const fs::path dir = scratch_dir();
  std::ofstream(dir / "bad.gbnf") << "root ::= \"a\"\nitem ::= [a-\n";
  const CommandResult gbnf = generate("--grammar " + quote((dir / "bad.gbnf").string()));
  EXPECT_NE(gbnf.code, 0);
  EXPECT_NE(gbnf.err.find("bad.gbnf: gbnf: line "), std::string::npos) << gbnf.err;
  fs::remove_all(dir);
  const CommandResult both = generate("--json --grammar x.gbnf");
  EXPECT_NE(both.code, 0);
  EXPECT_NE(both.err.find("excludes"), std::string::npos) << both.err;
}

}  // namespace
}  // namespace deepmoe::cli_test
