// The state of one generation under a grammar: the parser configuration after each accepted byte, grouped
// by token so the last N tokens can be rolled back (speculative drafts, token healing). Accepting a token
// either consumes all its bytes or changes nothing.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "grammar/token_masker.h"

namespace deepmoe::grammar {

class GrammarMatcher {
 public:
  explicit GrammarMatcher(std::shared_ptr<PushdownAutomaton> automaton, std::shared_ptr<TokenMasker> masker = nullptr);

  // Bytes as one step (rolled back as one token). False, and no change, when the grammar cannot take them.
  bool accept_bytes(std::string_view bytes);
  // A vocabulary token (needs a masker). EOS is accepted only where the grammar accepts and ends the match.
  bool accept_token(int32_t id);
  // Undoes the last `tokens` accepted steps (tokens or accept_bytes calls). Throws if there are fewer.
  void rollback(size_t tokens);
  size_t steps() const { return step_ends_.size(); }

  // The grammar is complete here (EOS would be allowed).
  bool is_accepted() const;
  // An EOS token was accepted.
  bool is_terminated() const { return terminated_; }
  // Bytes every continuation starts with (stops where more than one byte, or the end, is possible).
  std::string forced_bytes(size_t max_bytes = 4096) const;

  // Allowed next tokens (needs a masker); after EOS nothing is allowed.
  void fill_mask(std::span<uint64_t> mask);
  // The one allowed token, or -1 when there is not exactly one (used to fast-forward without sampling).
  int32_t forced_token(std::span<uint64_t> scratch_mask);

  PushdownAutomaton::ConfigId config() const { return configs_.back(); }
  TokenMasker* masker() { return masker_.get(); }

 private:
  std::shared_ptr<PushdownAutomaton> automaton_;
  std::shared_ptr<TokenMasker> masker_;
  std::vector<PushdownAutomaton::ConfigId> configs_;  // after each byte; configs_[0] = initial
  std::vector<size_t> step_ends_;                      // configs_.size() after each step
  bool terminated_ = false;
  size_t terminated_step_ = 0;
};

}  // namespace deepmoe::grammar
