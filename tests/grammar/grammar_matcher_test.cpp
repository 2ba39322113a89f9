// The byte-level matcher on hand-written GBNF grammars: acceptance, rollback, forced bytes, and the errors
// bad grammars must produce.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "core/error.h"
#include "grammar/gbnf_parser.h"
#include "grammar/grammar_matcher.h"
#include "grammar/json_schema_compiler.h"
#include "grammar/pushdown_automaton.h"

namespace deepmoe::grammar {
namespace {

bool matches(PushdownAutomaton& a, std::string_view text) {
  auto c = a.initial();
  for (char ch : text) {
    if (c == PushdownAutomaton::kDead) return false;
    c = a.step(c, uint8_t(ch));
  }
  return a.accepts(c);
}

std::shared_ptr<PushdownAutomaton> gbnf(std::string_view text) {
  return std::make_shared<PushdownAutomaton>(parse_gbnf(text));
}

TEST(Gbnf, LiteralsClassesAndRepetition) {
  auto a = gbnf("root ::= \"ab\" [0-9]+ (\"x\" | \"yz\")? [^a-c]{2,3}\n");
  EXPECT_TRUE(matches(*a, "ab1dd"));
  EXPECT_TRUE(matches(*a, "ab123xddd"));
  EXPECT_TRUE(matches(*a, "ab9yzde"));
  EXPECT_FALSE(matches(*a, "ab9yzdddd"));  // four of [^a-c]
  EXPECT_FALSE(matches(*a, "abxdd"));      // no digit
  EXPECT_FALSE(matches(*a, "ab1ad"));      // 'a' excluded
  EXPECT_FALSE(matches(*a, "ab1d"));       // one of [^a-c]
}

TEST(Gbnf, UnicodeClassesMatchUtf8) {
  auto a = gbnf("root ::= [α-ω]+ \"→\" .\n");
  EXPECT_TRUE(matches(*a, "αβγ→x"));
  EXPECT_TRUE(matches(*a, "ω→😀"));
  EXPECT_FALSE(matches(*a, "a→x"));
  EXPECT_FALSE(matches(*a, "α→"));
  // \xCE\xB1 is α; a lone lead byte is not a character
  EXPECT_FALSE(matches(*a, std::string("\xCE", 1) + "→x"));
}

TEST(Gbnf, RecursionCommentsAndMultiline) {
  auto a = gbnf(R"G(# balanced parentheses
root ::= item*
item ::= "(" root ")"   # nested
       | "x"
)G");
  EXPECT_TRUE(matches(*a, ""));
  EXPECT_TRUE(matches(*a, "(x(x))x"));
  EXPECT_FALSE(matches(*a, "(x"));
  EXPECT_FALSE(matches(*a, "x)"));
}

TEST(Gbnf, LlamaCppJsonGrammar) {
  // llama.cpp's grammars/json.gbnf
  auto a = gbnf(R"G(root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws

object ::=
  "{" ws (
            string ":" ws value
    ("," ws string ":" ws value)*
  )? "}" ws

array  ::=
  "[" ws (
            value
    ("," ws value)*
  )? "]" ws

string ::=
  "\"" (
    [^"\\\x7F\x00-\x1F] |
    "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) # escapes
  )* "\"" ws

number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws

# Optional space: by convention, applied in this grammar after literal chars when allowed
ws ::= | " " | "\n" [ \t]{0,20}
)G");
  EXPECT_TRUE(matches(*a, R"({"a": [1, 2.5, "x\n", true, null], "b": {}})"));
  EXPECT_FALSE(matches(*a, R"({"a": [1, 2.5,]})"));
  EXPECT_FALSE(matches(*a, R"([1])"));
}

TEST(Gbnf, ErrorsNameTheProblem) {
  auto expect_error = [](std::string_view text, std::string_view needle) {
    try {
      parse_gbnf(text);
      ADD_FAILURE() << "no error for: " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error("root ::= foo\n", "rule 'foo' is not defined");
  expect_error("start ::= \"a\"\n", "no 'root' rule");
  expect_error("root ::= \"a\n", "unterminated string");
  expect_error("root ::= [a-", "unterminated character class");
  expect_error("root ::= root \"a\" | \"b\"\n", "left-recursive");
  expect_error("root ::= \"a\"\nroot ::= \"b\"\n", "defined twice");
  expect_error("root ::= \"a\"{3,2}\n", "n < m");
  expect_error("root ::= (((\"a\")\n", "expected ')'");
  expect_error("root ::= " + std::string(5000, '('), "nested deeper");
}

TEST(Matcher, TokensRollBackExactly) {
  auto a = gbnf("root ::= \"{\" [a-z]+ \":\" [0-9]+ \"}\"\n");
  GrammarMatcher m(a);
  EXPECT_TRUE(m.accept_bytes("{ab"));
  EXPECT_FALSE(m.accept_bytes("c1"));  // all or nothing
  EXPECT_TRUE(m.accept_bytes("c:"));
  EXPECT_EQ(m.forced_bytes(), "");
  EXPECT_TRUE(m.accept_bytes("12}"));
  EXPECT_TRUE(m.is_accepted());
  m.rollback(2);
  EXPECT_FALSE(m.is_accepted());
  EXPECT_TRUE(m.accept_bytes("x:7}"));
  EXPECT_TRUE(m.is_accepted());
  m.rollback(2);
  EXPECT_EQ(m.steps(), 0u);
  EXPECT_EQ(m.forced_bytes(), "{");
  EXPECT_THROW(m.rollback(1), Error);
}

TEST(Matcher, ForcedBytesFollowTheOnlyPath) {
  auto a = gbnf("root ::= \"{\\\"name\\\":\" (\"true\" | \"false\") \"}\"\n");
  GrammarMatcher m(a);
  EXPECT_EQ(m.forced_bytes(), "{\"name\":");
  EXPECT_TRUE(m.accept_bytes("{\"name\":t"));
  EXPECT_EQ(m.forced_bytes(), "rue}");
}

TEST(Matcher, DeepNestingIsBounded) {
  // 20,000 nested arrays through the any-JSON grammar: no recursion in the matcher (every byte here is a
  // new parser state, the slowest path, so the depth is kept moderate).
  auto a = std::make_shared<PushdownAutomaton>(any_json_grammar());
  std::string text = std::string(20000, '[') + std::string(20000, ']');
  EXPECT_TRUE(matches(*a, text));
  EXPECT_FALSE(matches(*a, text + "]"));
}

TEST(Matcher, AmbiguityIsBoundedByAnError) {
  // (x?){200} style ambiguity: every prefix has many parses; the matcher must stay bounded.
  std::string g = "root ::= ";
  for (int i = 0; i < 300; ++i) g += "\"a\"? ";
  g += "\n";
  auto a = gbnf(g);
  EXPECT_TRUE(matches(*a, std::string(150, 'a')));
  EXPECT_FALSE(matches(*a, std::string(301, 'a')));
}

}  // namespace
}  // namespace deepmoe::grammar
