// JSON Schema `pattern` (ECMA-262 regular expressions, the subset without backreferences, lookaround and
// word boundaries) compiled into a grammar rule over the *encoded* contents of a JSON string — the bytes
// between the quotes. Each character is accepted in one spelling only: raw UTF-8, or the escape JSON
// requires for it (\" \\ and control characters as \n, \t ... or \u00XX), so what the grammar allows is a
// subset of what the pattern allows — never more.
//
// Patterns search (are unanchored) as the specification says: unless an alternative starts with ^ (ends with
// $), any characters may come before (after) it. Constructs outside the subset are errors that name them.
#pragma once

#include <string_view>

#include "grammar/code_point_set.h"
#include "grammar/grammar.h"

namespace deepmoe::grammar {

// A rule matching one encoded string character whose code point is in `set`.
Symbol json_char_in(const CodePointSet& set, GrammarBuilder& builder);
// Every code point except surrogates.
CodePointSet any_code_point();

Symbol compile_string_pattern(std::string_view pattern, GrammarBuilder& builder);

}  // namespace deepmoe::grammar
