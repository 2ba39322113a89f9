// JSON Schema → grammar on schemas whose accepted instances are known by construction.
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "grammar/json_schema_compiler.h"
#include "grammar/pushdown_automaton.h"

namespace deepmoe::grammar {
namespace {

struct Schema {
  explicit Schema(std::string_view json, JsonSchemaOptions o = {}) : a(compile_json_schema(json, o)) {}
  bool accepts(std::string_view text) {
    auto c = a.initial();
    for (char ch : text) {
      if (c == PushdownAutomaton::kDead) return false;
      c = a.step(c, uint8_t(ch));
    }
    return a.accepts(c);
  }
  PushdownAutomaton a;
};

std::string error_of(std::string_view json, JsonSchemaOptions o = {}) {
  try {
    compile_json_schema(json, o);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(JsonSchema, ObjectPropertiesRequiredAndAdditional) {
  Schema s(R"({"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},
               "required":["name"],"additionalProperties":false})");
  EXPECT_TRUE(s.accepts(R"({"name":"Ada"})"));
  EXPECT_TRUE(s.accepts(R"({"name":"Ada","age":36})"));
  EXPECT_FALSE(s.accepts(R"({"age":36})"));
  EXPECT_FALSE(s.accepts(R"({"name":"Ada","x":1})"));
  EXPECT_FALSE(s.accepts(R"({"name":"Ada","age":3.5})"));
}

TEST(JsonSchema, AdditionalPropertiesDefaultTrueButNeverADeclaredName) {
  Schema s(R"({"properties":{"a":{"type":"integer"}}})");
  EXPECT_TRUE(s.accepts(R"({"a":1,"b":"x"})"));
  EXPECT_TRUE(s.accepts(R"({"ab":"x","a\"":[]})"));
  EXPECT_FALSE(s.accepts(R"({"a":1,"a":"x"})"));   // "a" again as an additional property
  EXPECT_FALSE(s.accepts(R"({"\u0061":"x"})"));    // "a" spelled with an escape
  EXPECT_TRUE(s.accepts("5"));                      // not an object: properties do not apply
  JsonSchemaOptions strict;
  strict.additional_properties_default = false;
  Schema t(R"({"properties":{"a":{"type":"integer"}}})", strict);
  EXPECT_FALSE(t.accepts(R"({"a":1,"b":"x"})"));
}

TEST(JsonSchema, IntegerRangesAreExact) {
  Schema s(R"({"type":"integer","minimum":-17,"exclusiveMaximum":1234})");
  for (int v = -40; v < 1300; ++v) EXPECT_EQ(s.accepts(std::to_string(v)), v >= -17 && v < 1234) << v;
  EXPECT_FALSE(s.accepts("-0"));
  EXPECT_FALSE(s.accepts("007"));
}

TEST(JsonSchema, NumberBoundsNeverLetOutsideValuesThrough) {
  Schema s(R"({"type":"number","minimum":-2.5,"maximum":3})");
  for (int i = -400; i <= 400; ++i) {
    double v = i / 100.0;
    char buf[32];
    snprintf(buf, sizeof buf, "%.2f", v);
    if (s.accepts(buf)) EXPECT_TRUE(v >= -2.5 && v <= 3) << buf;
  }
  EXPECT_TRUE(s.accepts("3"));
  EXPECT_TRUE(s.accepts("3.0"));
  EXPECT_FALSE(s.accepts("3.01"));
  EXPECT_TRUE(s.accepts("-1.75"));
  EXPECT_TRUE(s.accepts("2.999"));
}

TEST(JsonSchema, ArraysPrefixItemsAndCounts) {
  Schema s(R"({"type":"array","prefixItems":[{"type":"string"},{"type":"boolean"}],
               "items":{"type":"null"},"minItems":1,"maxItems":4})");
  EXPECT_TRUE(s.accepts(R"(["a"])"));
  EXPECT_TRUE(s.accepts(R"(["a",true,null,null])"));
  EXPECT_FALSE(s.accepts(R"([])"));
  EXPECT_FALSE(s.accepts(R"(["a",true,null,null,null])"));
  EXPECT_FALSE(s.accepts(R"([true])"));
}

TEST(JsonSchema, StringLengthsCountCharactersNotBytes) {
  Schema s(R"({"type":"string","minLength":2,"maxLength":3})");
  EXPECT_TRUE(s.accepts(R"("éé")"));
  EXPECT_TRUE(s.accepts(R"("a\nb")"));
  EXPECT_FALSE(s.accepts(R"("é")"));
  EXPECT_FALSE(s.accepts(R"("abcd")"));
}

TEST(JsonSchema, PatternsSearchUnlessAnchored) {
  Schema s(R"({"type":"string","pattern":"a[0-9]{2}"})");
  EXPECT_TRUE(s.accepts(R"("xxa12yy")"));
  EXPECT_FALSE(s.accepts(R"("a1")"));
  Schema t(R"({"type":"string","pattern":"^[A-Z]\\w*$"})");
  EXPECT_TRUE(t.accepts(R"("Hello_1")"));
  EXPECT_FALSE(t.accepts(R"("hello")"));
  EXPECT_FALSE(t.accepts(R"("Hi there")"));
}

TEST(JsonSchema, FormatsRejectInvalidValues) {
  Schema d(R"({"type":"string","format":"date"})");
  EXPECT_TRUE(d.accepts(R"("2024-02-28")"));
  EXPECT_FALSE(d.accepts(R"("2024-02-30")"));
  EXPECT_FALSE(d.accepts(R"("2024-13-01")"));
  Schema ip(R"({"type":"string","format":"ipv4"})");
  EXPECT_TRUE(ip.accepts(R"("192.168.0.255")"));
  EXPECT_FALSE(ip.accepts(R"("256.1.1.1")"));
  Schema u(R"({"type":"string","format":"uuid"})");
  EXPECT_TRUE(u.accepts(R"("123e4567-e89b-12d3-a456-426614174000")"));
  EXPECT_FALSE(u.accepts(R"("123e4567e89b12d3a456426614174000")"));
}

TEST(JsonSchema, RefsRecurse) {
  Schema s(R"({"$defs":{"node":{"type":"object","properties":{"v":{"type":"integer"},
               "next":{"anyOf":[{"$ref":"#/$defs/node"},{"type":"null"}]}},"required":["v","next"],
               "additionalProperties":false}},"$ref":"#/$defs/node"})");
  EXPECT_TRUE(s.accepts(R"({"v":1,"next":{"v":2,"next":null}})"));
  EXPECT_FALSE(s.accepts(R"({"v":1,"next":{"v":2}})"));
}

TEST(JsonSchema, AllOfMergesAndOneOfNeedsDisjointBranches) {
  Schema s(R"({"allOf":[{"properties":{"a":{"type":"integer"}},"required":["a"]},
                         {"properties":{"a":{"minimum":5},"b":{"type":"string"}},"required":["b"]}],
               "type":"object"})");
  EXPECT_TRUE(s.accepts(R"({"a":7,"b":"x"})"));
  EXPECT_FALSE(s.accepts(R"({"a":3,"b":"x"})"));
  EXPECT_FALSE(s.accepts(R"({"a":7})"));
  Schema o(R"({"oneOf":[{"type":"string"},{"type":"integer"}]})");
  EXPECT_TRUE(o.accepts(R"("x")"));
  EXPECT_TRUE(o.accepts("3"));
  EXPECT_NE(error_of(R"({"oneOf":[{"type":"integer"},{"minimum":2}]})").find("'oneOf' at /"), std::string::npos);
}

TEST(JsonSchema, EnumAndConstFilteredByTheRest) {
  Schema s(R"({"enum":["a",1,"long",null],"type":"string","maxLength":2})");
  EXPECT_TRUE(s.accepts(R"("a")"));
  EXPECT_FALSE(s.accepts(R"("long")"));
  EXPECT_FALSE(s.accepts("1"));
}

TEST(JsonSchema, UnsupportedKeywordsAreErrorsWithTheirPath) {
  EXPECT_NE(error_of(R"({"properties":{"x":{"not":{"type":"string"}}}})").find("keyword 'not' at /properties/x"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"type":"array","contains":{"type":"string"}})").find("'contains' at /contains"), std::string::npos);
  EXPECT_NE(error_of(R"({"$ref":"http://example.com/x.json"})").find("'$ref'"), std::string::npos);
  EXPECT_NE(error_of(R"({"type":"nope"})").find("unknown type 'nope'"), std::string::npos);
  EXPECT_NE(error_of(R"({"type":)").find("not valid JSON"), std::string::npos);
  JsonSchemaOptions lenient;
  lenient.lenient = true;
  std::vector<std::string> warnings;
  EXPECT_NO_THROW(compile_json_schema(R"({"type":"string","not":{"const":"x"}})", lenient, &warnings));
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("'not'"), std::string::npos);
}

TEST(JsonSchema, HostileInputsEndInErrorsNotCrashes) {
  std::string deep;
  for (int i = 0; i < 100000; ++i) deep += "{\"items\":";
  deep += "true";
  for (int i = 0; i < 100000; ++i) deep += "}";
  EXPECT_NE(error_of(deep).find("nested deeper"), std::string::npos);
  std::string huge_enum = "{\"enum\":[";
  for (int i = 0; i < 50000; ++i) huge_enum += (i ? ",\"v" : "\"v") + std::to_string(i) + "\"";
  huge_enum += "]}";
  Schema e(huge_enum);
  EXPECT_TRUE(e.accepts("\"v49999\""));
  EXPECT_FALSE(e.accepts("\"v50000\""));
  EXPECT_FALSE(error_of(R"J({"type":"string","pattern":"(a*)*b"})J").empty());
  EXPECT_FALSE(error_of(R"J({"type":"string","pattern":"(?=x)"})J").empty());
}

TEST(JsonSchema, FlexibleWhitespace) {
  JsonSchemaOptions o;
  o.whitespace = Whitespace::flexible;
  Schema s(R"({"type":"object","properties":{"a":{"type":"array","items":{"type":"integer"}}}})", o);
  EXPECT_TRUE(s.accepts("{\n  \"a\": [1, 2]\n}"));
  Schema c(R"({"type":"object","properties":{"a":{"type":"array","items":{"type":"integer"}}}})");
  EXPECT_FALSE(c.accepts("{\"a\": [1]}"));
}

}  // namespace
}  // namespace deepmoe::grammar
