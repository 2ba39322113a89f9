// libFuzzer target: arbitrary bytes as config.json. The parser must accept them or throw deepmoe::Error;
// an accepted config must survive the writer round trip unchanged (model_config_to_json → parse).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "core/error.h"
#include "model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  deepmoe::ModelConfig config;
  try {
    config = deepmoe::parse_model_config(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.json");
  } catch (const deepmoe::Error&) {
    return 0;
  }
  // Valid input: the bounds the parser promises hold, and the round trip is exact.
  if (config.num_hidden_layers < 1 || config.num_hidden_layers > 1024 || config.n_routed_experts < 1 ||
      config.n_routed_experts > 4096 || config.n_routed_experts % config.n_group != 0 ||
      config.num_experts_per_tok > config.n_routed_experts)
    std::abort();
  deepmoe::ModelConfig back = deepmoe::parse_model_config(deepmoe::model_config_to_json(config), "roundtrip.json");
  if (!(back == config)) std::abort();
  return 0;
}
