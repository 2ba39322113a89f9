#include "checked_output.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "core/error.h"

namespace deepmoe::tools {
namespace {

[[noreturn]] void throw_write_error(int error_number) {
  // errno is only meaningful when the failing call set it; an earlier buffered write may have failed silently.
  const std::string reason = error_number != 0 ? std::strerror(error_number) : "an earlier write failed";
  throw Error("cannot write to standard output: " + reason);
}

}  // namespace

void write_stdout(std::string_view bytes) {
  errno = 0;
  if (!bytes.empty() && std::fwrite(bytes.data(), 1, bytes.size(), stdout) != bytes.size())
    throw_write_error(errno);
  if (std::ferror(stdout)) throw_write_error(errno);
}

void flush_stdout() {
  errno = 0;
  const bool flushed = std::fflush(stdout) == 0;
  if (!flushed || std::ferror(stdout)) throw_write_error(errno);
}

}  // namespace deepmoe::tools
