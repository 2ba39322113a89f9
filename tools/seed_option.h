// --seed as llama.cpp users know it: a number from 0 to 2^64 - 1 fixes the random source; -1 (the default) asks
// for a random seed, which the command reports on stderr so that the run can be repeated with --seed N.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace CLI {
class App;
}

namespace deepmoe::tools {

// Adds --seed. `given` is set when a fixed seed was given (not for -1).
void add_seed_option(CLI::App& app, uint64_t& seed, bool& given);

// "-1" → nullopt (random); "0".."18446744073709551615" → the seed; anything else → an error message.
struct ParsedSeed {
  std::optional<uint64_t> seed;
  std::string error;  // non-empty: not a seed
};
ParsedSeed parse_seed(const std::string& text);

// A seed from the operating system's random source.
uint64_t random_seed();

}  // namespace deepmoe::tools
