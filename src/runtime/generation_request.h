// One generation request as the engine receives it (from the CLI now, the server later), and the checks that
// turn a bad one into a clear error before any work is done (the reliability checklist §2 R1–R4).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "sampling/sampling_params.h"

namespace deepmoe {
namespace grammar {
struct Grammar;
}

struct GenerationRequest {
  std::vector<int32_t> prompt;  // token ids, chat template already applied when chatting
  SamplingParams sampling;
  int64_t max_tokens = 256;     // new tokens at most, the ending EOS included
  std::vector<std::string> stop;         // stop strings, excluded from the output
  std::vector<int32_t> stop_token_ids;   // tokens that end generation besides the model's EOS ids
  bool ignore_eos = false;               // keep going past EOS (benchmarks)
  // Constrained output: every generated token must keep the text a prefix of the grammar's language, and the
  // request ends (finish "stop") once the grammar is complete. Null: unconstrained. Compiled once, shared by
  // every request that uses it (each builds its own matcher).
  std::shared_ptr<const grammar::Grammar> grammar;
  // With a grammar: where it allows exactly one continuation, take the forced tokens without sampling them and
  // feed them to the model in one batch. Off when log-probabilities are asked for (forced tokens have none).
  bool fast_forward = true;
  // With a grammar: when max_tokens is near, make sure the output can still be completed — a sampled token after
  // which the shortest completion (plus EOS) would no longer fit is replaced by that completion from before it,
  // so the text stays valid; finish "length" says the budget cut it short.
  bool close_before_limit = true;
  // Token healing (runtime/token_healing.h): the prompt's last token(s) are backed off when a longer token could
  // span the boundary, and the output is constrained to start with their bytes (which are not output again).
  bool token_healing = false;
};

// Why a generation ended. OpenAI's finish_reason is "stop" for the first two and "length" for the others.
enum class FinishReason { None, Eos, StopString, MaxTokens, ContextFull };
const char* finish_reason_name(FinishReason reason);

// The first problem with `request` for a model of `vocab_size` tokens and `context_length` positions, naming
// the field: empty prompt, token ids outside the vocabulary, max_tokens < 1, prompt + max_tokens beyond the
// context, invalid sampling values or stop strings.
std::optional<Error> validate_request(const GenerationRequest& request, int64_t vocab_size, int64_t context_length);

}  // namespace deepmoe
