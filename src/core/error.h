// Errors: a request or input problem is a deepmoe::Error carrying context (file, tensor, field) so the user
// learns exactly what is wrong; a broken internal invariant aborts with file:line (DEEPMOE_CHECK).
#pragma once

#include <stdexcept>
#include <string>

namespace deepmoe {

struct ErrorContext {
  std::string file;    // path of the file being read, if any
  std::string tensor;  // tensor name, if any
  std::string field;   // config / JSON field, if any
};

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message, ErrorContext context = {});

  const std::string& message() const { return message_; }
  const ErrorContext& context() const { return context_; }

  // A copy of this error with more context filled in where it is still empty.
  Error with_file(const std::string& file) const;
  Error with_tensor(const std::string& tensor) const;
  Error with_field(const std::string& field) const;

 private:
  std::string message_;
  ErrorContext context_;
};

[[noreturn]] void fail_invariant(const char* file, int line, const char* condition, const std::string& detail);

}  // namespace deepmoe

// Internal invariant: violated only by a bug in deepmoe, never by user input.
#define DEEPMOE_CHECK(cond, ...)                                                        \
  do {                                                                                 \
    if (!(cond)) ::deepmoe::fail_invariant(__FILE__, __LINE__, #cond, std::string(__VA_ARGS__)); \
  } while (0)
