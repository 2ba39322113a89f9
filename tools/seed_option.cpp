#include "seed_option.h"

#include <CLI/CLI.hpp>

#include <charconv>
#include <random>

namespace deepmoe::tools {

ParsedSeed parse_seed(const std::string& text) {
  if (text == "-1") return {};
  uint64_t value = 0;
  const char* end = text.data() + text.size();
  const auto [at, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || text[0] == '-' || text[0] == '+' || ec != std::errc() || at != end)
    return {std::nullopt, "must be -1 (a random seed) or a whole number from 0 to 18446744073709551615, got '" +
                              text + "'"};
  return {value, ""};
}

uint64_t random_seed() {
  std::random_device device;
  return (uint64_t(device()) << 32) ^ uint64_t(device());
}

void add_seed_option(CLI::App& app, uint64_t& seed, bool& given) {
  app.add_option_function<std::string>(
         "--seed",
         [&seed, &given](const std::string& text) {
           const ParsedSeed parsed = parse_seed(text);
           given = parsed.seed.has_value();
           if (parsed.seed) seed = *parsed.seed;
         },
         "Random seed, 0 to 18446744073709551615; -1 (default) = a random one, reported on stderr so the run "
         "can be repeated")
      ->type_name("INT")
      ->check(CLI::Validator([](std::string& text) { return parse_seed(text).error; }, ""));
}

}  // namespace deepmoe::tools
