// libFuzzer target: arbitrary bytes as a JSON Schema. The compiler must return a grammar or throw
// deepmoe::Error (unsupported keyword, bad schema, a limit); a compiled grammar must run: its matcher takes
// the schema text itself byte by byte without crashing (whether it accepts it does not matter).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/error.h"
#include "grammar/json_schema_compiler.h"
#include "grammar/pushdown_automaton.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    deepmoe::grammar::PushdownAutomaton a(deepmoe::grammar::compile_json_schema(text));
    auto c = a.initial();
    for (char ch : text) {
      if (c == deepmoe::grammar::PushdownAutomaton::kDead) break;
      c = a.step(c, uint8_t(ch));
    }
  } catch (const deepmoe::Error&) {
  }
  return 0;
}
