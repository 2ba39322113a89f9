// A model folder ready to generate from: the engine, its tokenizer, and the CausalLm view the generation
// loop drives. Both `deepmoe generate` and `deepmoe chat` (and later the server) load through here.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "runtime/deepseek_lm.h"
#include "runtime/engine.h"
#include "tokenizer/tokenizer.h"

namespace deepmoe {

struct LoadedModel {
  std::string dir;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<DeepseekLm> lm;
};

// Called as loading moves through its stages (fraction in [0, 1]).
using LoadProgress = std::function<void(std::string_view stage, double fraction)>;

// Loads dir/config.json, the safetensors weights and (unless with_tokenizer is false: then tokenizer and lm stay
// null) dir/tokenizer.json on every rank of `comm`, which must outlive the result. A missing folder or file is a
// deepmoe::Error naming it.
LoadedModel load_model_dir(const std::string& dir, const ExecutorOptions& options, Communicator& comm,
                           const LoadProgress& progress = {}, bool with_tokenizer = true);

}  // namespace deepmoe
