// Whether a stream is the user's terminal, for the choices that depend on it (progress bars, interactive chat, a
// final newline). Under an MPI launcher a rank's streams may be pseudo-terminals whatever the user redirected, so
// there nothing counts as one: output stays byte-equal to a single process's.
#pragma once

#include <cstdio>

namespace deepmoe::tools {

bool is_user_terminal(std::FILE* stream);

}  // namespace deepmoe::tools
