#include "core/error.h"

#include <cstdio>
#include <cstdlib>

namespace deepmoe {
namespace {

std::string format(const std::string& message, const ErrorContext& c) {
  std::string out;
  if (!c.file.empty()) out += c.file + ": ";
  if (!c.tensor.empty()) out += "tensor '" + c.tensor + "': ";
  if (!c.field.empty()) out += "field '" + c.field + "': ";
  return out + message;
}

}  // namespace

Error::Error(const std::string& message, ErrorContext context)
    : std::runtime_error(format(message, context)), message_(message), context_(std::move(context)) {}

Error Error::with_file(const std::string& file) const {
  ErrorContext c = context_;
  if (c.file.empty()) c.file = file;
  return Error(message_, c);
}

Error Error::with_tensor(const std::string& tensor) const {
  ErrorContext c = context_;
  if (c.tensor.empty()) c.tensor = tensor;
  return Error(message_, c);
}

Error Error::with_field(const std::string& field) const {
  ErrorContext c = context_;
  if (c.field.empty()) c.field = field;
  return Error(message_, c);
}

void fail_invariant(const char* file, int line, const char* condition, const std::string& detail) {
  std::fprintf(stderr, "deepmoe: internal error at %s:%d: check failed: %s%s%s\n", file, line, condition,
               detail.empty() ? "" : ": ", detail.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace deepmoe
