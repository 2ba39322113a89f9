// Warnings from library code to the person running it: something was accepted but is probably not what they
// meant (weights that are random, token ids with no text, text that was not valid UTF-8). Library code calls
// warn_once(); the program decides where warnings go (stderr by default), so deep code never prints itself.
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace deepmoe {

using WarningHandler = std::function<void(std::string_view message)>;

// Replaces where warnings go; an empty handler restores the default ("deepmoe: warning: MESSAGE" on stderr).
// Returns the previous handler (empty when it was the default).
WarningHandler set_warning_handler(WarningHandler handler);

// Reports `message` the first time `key` is seen in this process and returns true; later calls with the same
// key do nothing and return false. Thread-safe.
bool warn_once(std::string_view key, const std::string& message);

// Forgets which keys were reported (tests).
void reset_warnings();

}  // namespace deepmoe
