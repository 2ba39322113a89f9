#include "user_terminal.h"

#include <unistd.h>

#include "parallel/communicator.h"

namespace deepmoe::tools {

bool is_user_terminal(std::FILE* stream) { return !launched_by_mpi() && ::isatty(fileno(stream)) == 1; }

}  // namespace deepmoe::tools
