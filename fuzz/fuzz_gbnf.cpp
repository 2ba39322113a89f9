// libFuzzer target: arbitrary bytes as a GBNF grammar. The parser must return a grammar or throw
// deepmoe::Error naming the problem; a parsed grammar must run on the input bytes without crashing.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/error.h"
#include "grammar/gbnf_parser.h"
#include "grammar/pushdown_automaton.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    deepmoe::grammar::PushdownAutomaton a(deepmoe::grammar::parse_gbnf(text));
    auto c = a.initial();
    for (char ch : text) {
      if (c == deepmoe::grammar::PushdownAutomaton::kDead) break;
      c = a.step(c, uint8_t(ch));
    }
  } catch (const deepmoe::Error&) {
  }
  return 0;
}
