// Writes to standard output that fail loudly: a full disk, a closed pipe's EPIPE or an I/O error becomes a
// deepmoe::Error naming the OS error (exit status 1), instead of output silently lost with exit status 0.
#pragma once

#include <string_view>

namespace deepmoe::tools {

// Writes `bytes` to stdout (buffered); throws Error when the stream has failed.
void write_stdout(std::string_view bytes);
// Flushes stdout; throws Error when this or any earlier write to it failed.
void flush_stdout();

}  // namespace deepmoe::tools
