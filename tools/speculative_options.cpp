#include "speculative_options.h"

#include <CLI/CLI.hpp>

#include <cstdio>

#include "progress.h"

namespace deepmoe::tools {

void add_speculative_options(CLI::App& app, SpeculativeArgs& args) {
  app.add_option("--speculative", args.mode,
                 "Speculative decoding: mtp drafts with the checkpoint's MTP layer and verifies the drafts in one "
                 "forward; the output is the same as without it (token for token when greedy, in distribution "
                 "when sampling)")
      ->check(CLI::IsMember({"off", "mtp"}))
      ->capture_default_str();
  app.add_option("--draft-tokens", args.draft_tokens,
                 "Draft tokens per step with --speculative mtp (1 = DeepSeek's setting; more reuse the MTP layer "
                 "on its own output)")
      ->check(CLI::Range(1, 16))
      ->capture_default_str();
}

GenerationLoop::GenerationLoop(LoadedModel& loaded, const SpeculativeArgs& args) {
  if (args.mode == "mtp") {
    mtp_ = std::make_unique<MtpSpeculativeLm>(*loaded.engine);
    speculative_ = std::make_unique<SpeculativeGenerator>(*mtp_, *loaded.tokenizer, args.draft_tokens);
  } else {
    progress_lm_ = std::make_unique<PrefillProgressLm>(*loaded.lm);
    plain_ = std::make_unique<Generator>(*progress_lm_, *loaded.tokenizer);
  }
}

CausalLm& GenerationLoop::lm() { return mtp_ ? static_cast<CausalLm&>(*mtp_) : plain_->lm(); }

std::unique_ptr<RequestState> GenerationLoop::generate(GenerationRequest request, LmSequence& sequence,
                                                       const std::function<void(std::string_view)>& on_text) {
  if (speculative_) return speculative_->generate(std::move(request), sequence, on_text);
  return plain_->generate(std::move(request), sequence, on_text);
}

std::string speculative_summary(const GenerationStats& s) {
  if (s.verify_steps == 0) return {};
  char buf[160];
  std::snprintf(buf, sizeof buf, ", drafts accepted %lld/%lld (%.1f%%), %.2f tokens per step",
                (long long)s.accepted_draft_tokens, (long long)s.draft_tokens, 100.0 * s.draft_acceptance_rate(),
                s.tokens_per_verify_step());
  return buf;
}

}  // namespace deepmoe::tools
