// GBNF, the grammar format of llama.cpp (grammars/README.md there), parsed into a byte-level Grammar:
//   name ::= alternatives        (the start rule is `root`)
//   "literal"  [class]  [^class]  .  name  ( group )  with  *  +  ?  {m}  {m,}  {m,n}
//   escapes \n \r \t \\ \" \[ \] \xHH \uHHHH \UHHHHHHHH; comments start with #.
// A newline ends a rule except inside parentheses or after `|`. Literals and classes are Unicode code points
// (matched as UTF-8). Errors name the line and column.
#pragma once

#include <string_view>

#include "grammar/grammar.h"

namespace deepmoe::grammar {

Grammar parse_gbnf(std::string_view text, GrammarLimits limits = {});

}  // namespace deepmoe::grammar
