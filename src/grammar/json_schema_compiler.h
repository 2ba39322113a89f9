// JSON Schema (draft 2020-12 subset) → byte-level Grammar that accepts exactly the compact-or-spaced
// serializations of instances the schema accepts — or a subset of them, never more. Properties come in
// schema order; every keyword the compiler cannot enforce is an error that names the keyword and its JSON
// pointer (lenient mode turns those into warnings and ignores the keyword).
//
// Supported: type (incl. lists), properties, required, additionalProperties (default true, or false as in
// OpenAI strict mode), items, prefixItems, minItems, maxItems, enum, const, anyOf, oneOf (when its branches
// are provably disjoint), allOf (merged), local $ref / $defs incl. recursion, minLength, maxLength, pattern
// (ECMA subset), format (date, time, date-time, email, uuid, ipv4, uri), minimum, maximum,
// exclusiveMinimum, exclusiveMaximum (exact for integers; numbers keep to the whole-unit intervals inside
// the bounds), minProperties / maxProperties / uniqueItems where they are implied by the rest.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "grammar/grammar.h"

namespace deepmoe::grammar {

enum class Whitespace {
  compact,   // no whitespace between tokens: {"a":1,"b":[2,3]}
  flexible,  // optional " " or a newline with up to 20 spaces/tabs wherever JSON allows whitespace
};

struct JsonSchemaOptions {
  bool lenient = false;                      // unsupported keywords: warning, keyword ignored
  bool additional_properties_default = true; // false: OpenAI strict mode
  Whitespace whitespace = Whitespace::compact;
  GrammarLimits limits;
};

// Throws deepmoe::Error naming the keyword and path for unsupported or invalid schemas.
Grammar compile_json_schema(std::string_view schema_json, const JsonSchemaOptions& options = {},
                            std::vector<std::string>* warnings = nullptr);

// Any JSON value (the "JSON mode").
Grammar any_json_grammar(Whitespace whitespace = Whitespace::compact);

}  // namespace deepmoe::grammar
