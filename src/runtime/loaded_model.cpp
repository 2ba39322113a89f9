#include "runtime/loaded_model.h"

#include <filesystem>

#include "core/error.h"

namespace deepmoe {

LoadedModel load_model_dir(const std::string& dir, const ExecutorOptions& options, Communicator& comm,
                           const LoadProgress& progress, bool with_tokenizer) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(dir, ec)) throw Error("model folder does not exist", ErrorContext{.file = dir});
  if (!fs::is_directory(dir, ec)) throw Error("is not a model folder (not a directory)", ErrorContext{.file = dir});
  for (const char* required : {"config.json", "tokenizer.json"}) {
    if (!with_tokenizer && std::string_view(required) == "tokenizer.json") continue;
    const fs::path path = fs::path(dir) / required;
    if (!fs::exists(path, ec)) throw Error("missing from the model folder", ErrorContext{.file = path.string()});
  }
  auto report = [&](std::string_view stage, double fraction) {
    if (progress) progress(stage, fraction);
  };
  LoadedModel out;
  out.dir = dir;
  if (with_tokenizer) {
    report("loading tokenizer", 0.0);
    out.tokenizer = Tokenizer::load(dir);
  }
  report("loading weights", 0.1);
  out.engine = Engine::open(dir, options, comm);
  if (with_tokenizer) out.lm = std::make_unique<DeepseekLm>(*out.engine);
  report("loaded", 1.0);
  return out;
}

}  // namespace deepmoe
