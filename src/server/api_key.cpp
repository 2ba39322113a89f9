#include "server/api_key.h"

#include <fstream>
#include <sstream>

#include "core/error.h"

namespace deepmoe::server {

bool constant_time_equal(std::string_view presented, std::string_view expected) {
  // The length difference is folded into the result rather than returned early; every byte of `expected` is
  // visited (a missing presented byte compares as 0 against it).
  volatile unsigned char diff = presented.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    const unsigned char p = i < presented.size() ? static_cast<unsigned char>(presented[i]) : 0;
    diff = diff | (p ^ static_cast<unsigned char>(expected[i]));
  }
  return diff == 0;
}

bool bearer_key_matches(std::string_view authorization, std::string_view expected) {
  constexpr std::string_view scheme = "bearer ";
  // The scheme is public, so it may be checked with early exits; only the key needs the constant-time compare.
  if (authorization.size() < scheme.size()) return false;
  for (size_t i = 0; i < scheme.size(); ++i) {
    const char c = authorization[i];
    if ((c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c) != scheme[i]) return false;
  }
  return constant_time_equal(authorization.substr(scheme.size()), expected);
}

std::string read_api_key_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read the API key file", ErrorContext{.file = path});
  std::ostringstream buffer;
  buffer << in.rdbuf();
  std::string key = buffer.str();
  const size_t begin = key.find_first_not_of(" \t\r\n");
  if (begin == std::string::npos) throw Error("the API key file holds no key", ErrorContext{.file = path});
  key = key.substr(begin, key.find_last_not_of(" \t\r\n") - begin + 1);
  if (key.find_first_of(" \t\r\n") != std::string::npos)
    throw Error("the API key must be one word (no whitespace inside)", ErrorContext{.file = path});
  return key;
}

}  // namespace deepmoe::server
