// A model folder ready to generate from: the forward pass, its tokenizer, and the CausalLm view the generation
// loop drives. Both `deepmoe generate` and `deepmoe chat` (and later the server) load through here.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "model/deepseek_model.h"
#include "runtime/deepseek_lm.h"
#include "tokenizer/tokenizer.h"

namespace deepmoe {

struct LoadedModel {
  std::string dir;
  std::unique_ptr<DeepseekModel> model;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<DeepseekLm> lm;
};

// Called as loading moves through its stages (fraction in [0, 1]).
using LoadProgress = std::function<void(std::string_view stage, double fraction)>;

// Loads dir/config.json, the safetensors weights and dir/tokenizer.json. A missing folder or file is a
// deepmoe::Error naming it.
LoadedModel load_model_dir(const std::string& dir, const ModelOptions& options, const LoadProgress& progress = {});

}  // namespace deepmoe
