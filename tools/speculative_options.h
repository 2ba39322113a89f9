// `--speculative mtp [--draft-tokens K]` for the commands that generate: the plain generation loop, or MTP
// speculative decoding over the same loaded model (runtime/speculative_generator.h).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "runtime/generator.h"
#include "runtime/loaded_model.h"
#include "runtime/speculative_generator.h"
#include "runtime/speculative_mtp_lm.h"

namespace CLI {
class App;
}

namespace deepmoe::tools {

struct SpeculativeArgs {
  std::string mode = "off";  // off | mtp
  int draft_tokens = 1;
};

void add_speculative_options(CLI::App& app, SpeculativeArgs& args);

// Generates with whichever loop the options chose. Throws deepmoe::Error when --speculative mtp meets a model
// without an MTP layer.
class GenerationLoop {
 public:
  GenerationLoop(LoadedModel& loaded, const SpeculativeArgs& args);

  CausalLm& lm();
  std::unique_ptr<LmSequence> new_sequence() { return lm().new_sequence(); }
  std::unique_ptr<RequestState> generate(GenerationRequest request, LmSequence& sequence,
                                         const std::function<void(std::string_view)>& on_text);

 private:
  std::unique_ptr<CausalLm> progress_lm_;  // the plain loop's model, with a progress bar for long prompts
  std::unique_ptr<Generator> plain_;
  std::unique_ptr<MtpSpeculativeLm> mtp_;
  std::unique_ptr<SpeculativeGenerator> speculative_;
};

// ", drafts accepted A/D (R%), T tokens per step" after a speculative generation; empty otherwise.
std::string speculative_summary(const GenerationStats& stats);

}  // namespace deepmoe::tools
