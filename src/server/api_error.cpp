#include "server/api_error.h"

#include <nlohmann/json.hpp>

namespace deepmoe::server {

std::string ApiError::to_json() const {
  nlohmann::ordered_json e;
  e["message"] = message;
  e["type"] = type;
  e["param"] = param.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(param);
  e["code"] = code.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(code);
  nlohmann::ordered_json body;
  body["error"] = std::move(e);
  // A message may quote request text that is not valid UTF-8; replace such bytes rather than fail.
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

ApiError ApiError::invalid_field(std::string param, std::string message) {
  ApiError e;
  e.message = param.empty() ? std::move(message) : "'" + param + "' " + message;
  e.param = std::move(param);
  e.code = "invalid_value";
  return e;
}

ApiError ApiError::from_error(const Error& error) {
  return invalid_field(error.context().field, error.message());
}

}  // namespace deepmoe::server
