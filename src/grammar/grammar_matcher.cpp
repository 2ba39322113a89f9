#include "grammar/grammar_matcher.h"

#include <bit>

#include "core/error.h"

namespace deepmoe::grammar {

GrammarMatcher::GrammarMatcher(std::shared_ptr<PushdownAutomaton> automaton, std::shared_ptr<TokenMasker> masker)
    : automaton_(std::move(automaton)), masker_(std::move(masker)) {
  configs_.push_back(automaton_->initial());
}

bool GrammarMatcher::accept_bytes(std::string_view bytes) {
  if (terminated_) return false;
  PushdownAutomaton::ConfigId c = configs_.back();
  size_t start = configs_.size();
  for (char ch : bytes) {
    if (c == PushdownAutomaton::kDead) break;
    c = automaton_->step(c, uint8_t(ch));
    configs_.push_back(c);
  }
  if (c == PushdownAutomaton::kDead) {
    configs_.resize(start);
    return false;
  }
  step_ends_.push_back(configs_.size());
  return true;
}

bool GrammarMatcher::accept_token(int32_t id) {
  DEEPMOE_CHECK(masker_ != nullptr, "accept_token needs a vocabulary");
  if (terminated_) return false;
  if (id == masker_->trie().eos_id()) {
    if (!is_accepted()) return false;
    step_ends_.push_back(configs_.size());
    terminated_ = true;
    terminated_step_ = step_ends_.size();
    return true;
  }
  if (id < 0 || id >= masker_->trie().vocab_size() || masker_->trie().spelling(id).empty()) return false;
  return accept_bytes(masker_->trie().spelling(id));
}

void GrammarMatcher::rollback(size_t tokens) {
  if (tokens > step_ends_.size())
    throw Error("grammar matcher: cannot roll back " + std::to_string(tokens) + " tokens, only " +
                std::to_string(step_ends_.size()) + " were accepted");
  step_ends_.resize(step_ends_.size() - tokens);
  configs_.resize(step_ends_.empty() ? 1 : step_ends_.back());
  if (terminated_ && step_ends_.size() < terminated_step_) terminated_ = false;
}

bool GrammarMatcher::is_accepted() const { return automaton_->accepts(configs_.back()); }

std::string GrammarMatcher::forced_bytes(size_t max_bytes) const {
  std::string out;
  PushdownAutomaton::ConfigId c = configs_.back();
  while (c != PushdownAutomaton::kDead && out.size() < max_bytes && !automaton_->accepts(c)) {
    const ByteSet& v = automaton_->viable_bytes(c);
    if (v.count() != 1) break;
    int b = 0;
    for (int w = 0; w < 4; ++w)
      if (v.words[w]) { b = w * 64 + std::countr_zero(v.words[w]); break; }
    out.push_back(char(b));
    c = automaton_->step(c, uint8_t(b));
  }
  return out;
}

void GrammarMatcher::fill_mask(std::span<uint64_t> mask) {
  DEEPMOE_CHECK(masker_ != nullptr, "fill_mask needs a vocabulary");
  if (terminated_) {
    std::fill(mask.begin(), mask.end(), 0);
    return;
  }
  masker_->fill_mask(configs_.back(), mask);
}

int32_t GrammarMatcher::forced_token(std::span<uint64_t> scratch_mask) {
  fill_mask(scratch_mask);
  int32_t found = -1;
  for (size_t w = 0; w < scratch_mask.size(); ++w) {
    uint64_t bits = scratch_mask[w];
    if (!bits) continue;
    if (found >= 0 || std::popcount(bits) > 1) return -1;
    found = int32_t(w * 64 + std::countr_zero(bits));
  }
  return found;
}

}  // namespace deepmoe::grammar
