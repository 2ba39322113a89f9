// Errors in the words of the command line: the library names a request's fields as the OpenAI API does
// ("field 'top_p': ..."); a command-line user typed --top-p, so the message names that flag instead.
#pragma once

#include <string>

#include "core/error.h"

namespace deepmoe::tools {

// The flag that sets a request field ("top_p" → "--top-p"); empty for a field no flag sets.
std::string flag_for_field(const std::string& field);

// `e` with its field replaced by the flag that sets it ("--top-p: must be in (0, 1] ..."), or by "the prompt"
// for the prompt; unchanged when no flag sets the field.
Error flag_error(const Error& e);

}  // namespace deepmoe::tools
