// API-key checks (the reliability checklist §2 R7): the exact bytes of an `Authorization: Bearer <key>` header
// against the configured key, compared in time that does not depend on where they differ.
#pragma once

#include <string>
#include <string_view>

namespace deepmoe::server {

// True when `authorization` is "Bearer " followed by exactly `expected` (the scheme name case-insensitive, as
// RFC 7235 says; the key itself case-sensitive).
bool bearer_key_matches(std::string_view authorization, std::string_view expected);

// Constant-time equality over the bytes of `expected`: runs the same loop whatever `presented` holds.
bool constant_time_equal(std::string_view presented, std::string_view expected);

// The key in a key file: its content without surrounding whitespace. Throws deepmoe::Error naming the file when
// it cannot be read or holds no key.
std::string read_api_key_file(const std::string& path);

}  // namespace deepmoe::server
