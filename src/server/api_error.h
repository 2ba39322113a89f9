// The error every failed API call returns, in OpenAI's shape — {"error": {"message", "type", "param", "code"}}
// — with the HTTP status that goes with it (docs/SERVER.md lists them).
#pragma once

#include <string>

#include "core/error.h"

namespace deepmoe::server {

struct ApiError {
  int status = 400;
  std::string type = "invalid_request_error";
  std::string message;
  std::string param;  // the request field at fault; empty is JSON null
  std::string code;   // a stable machine-readable word; empty is JSON null

  std::string to_json() const;

  // 400 for a field with a bad value; the message names the field and says what was expected.
  static ApiError invalid_field(std::string param, std::string message);
  // 400 from a library validation error (its context names the field).
  static ApiError from_error(const Error& error);
};

}  // namespace deepmoe::server
