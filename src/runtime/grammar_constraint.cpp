#include "runtime/grammar_constraint.h"

#include <algorithm>

#include "core/error.h"
#include "grammar/pushdown_automaton.h"
#include "grammar/token_masker.h"

namespace deepmoe {
namespace {

// The length of the longest prefix of `bytes` made of whole UTF-8 sequences.
size_t whole_utf8_prefix(const std::string& bytes) {
  size_t i = 0;
  while (i < bytes.size()) {
    const auto b = static_cast<uint8_t>(bytes[i]);
    const size_t len = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || i + len > bytes.size()) break;
    i += len;
  }
  return i;
}

}  // namespace

std::shared_ptr<const grammar::TokenTrie> grammar_vocabulary(const Tokenizer& tokenizer, int64_t vocab_size,
                                                             int32_t eos_id) {
  const int32_t size = static_cast<int32_t>(std::max<int64_t>(vocab_size, tokenizer.vocab_size()));
  std::vector<std::string> spellings(static_cast<size_t>(size));
  for (int32_t id = 0; id < tokenizer.vocab_size(); ++id)
    if (!tokenizer.is_special(id)) spellings[size_t(id)] = tokenizer.token_bytes(id);
  return std::make_shared<grammar::TokenTrie>(std::move(spellings), eos_id);
}

GrammarConstraint::GrammarConstraint(const grammar::Grammar& g, std::shared_ptr<const grammar::TokenTrie> vocabulary,
                                     std::vector<int32_t> eos_ids)
    : automaton_(grammar::matches_nothing(g)
                     ? throw Error("grammar: matches no output at all (a false schema, an empty enum, or branches "
                                   "that contradict each other)", ErrorContext{.field = "grammar"})
                     : std::make_shared<grammar::PushdownAutomaton>(g)),
      masker_(std::make_shared<grammar::TokenMasker>(automaton_, vocabulary)),
      matcher_(automaton_, masker_),
      eos_ids_(std::move(eos_ids)),
      mask_(grammar::mask_words(vocabulary->vocab_size())) {
  if (vocabulary->eos_id() >= 0) eos_ids_.push_back(vocabulary->eos_id());
  std::erase_if(eos_ids_, [&](int32_t id) { return id < 0 || id >= vocabulary->vocab_size(); });
  std::sort(eos_ids_.begin(), eos_ids_.end());
  eos_ids_.erase(std::unique(eos_ids_.begin(), eos_ids_.end()), eos_ids_.end());
}

std::span<const uint64_t> GrammarConstraint::mask() {
  if (!mask_valid_) {
    matcher_.fill_mask(mask_);
    if (!matcher_.is_terminated() && matcher_.is_accepted())
      for (int32_t id : eos_ids_) grammar::mask_set(mask_, id);
    if (std::all_of(mask_.begin(), mask_.end(), [](uint64_t w) { return w == 0; }))
      throw Error("grammar: no token of the vocabulary can continue the output here (after " +
                  std::to_string(matcher_.steps()) + " tokens)");
    mask_valid_ = true;
  }
  return mask_;
}

bool GrammarConstraint::is_eos(int32_t token) const {
  return std::binary_search(eos_ids_.begin(), eos_ids_.end(), token);
}

bool GrammarConstraint::accept(int32_t token) {
  bool ok;
  if (is_eos(token)) {
    // Any EOS id ends the match the way the trie's own does; without one in the trie, the generation ends
    // where the grammar accepts and the matcher has nothing to record.
    const int32_t trie_eos = masker_->trie().eos_id();
    if (trie_eos < 0) return !matcher_.is_terminated() && matcher_.is_accepted();
    ok = matcher_.accept_token(trie_eos);
  } else {
    ok = matcher_.accept_token(token);
  }
  if (ok) mask_valid_ = false;
  return ok;
}

void GrammarConstraint::rollback(size_t n) {
  if (n == 0) return;
  matcher_.rollback(n);
  mask_valid_ = false;
}

bool GrammarConstraint::complete() const {
  if (matcher_.is_terminated()) return true;
  return matcher_.is_accepted() && automaton_->viable_bytes(matcher_.config()).empty();
}

std::vector<int32_t> GrammarConstraint::forced_tokens(const Tokenizer& tokenizer, size_t max_bytes) {
  if (matcher_.is_terminated()) return {};
  std::string bytes = matcher_.forced_bytes(max_bytes);
  const size_t whole = whole_utf8_prefix(bytes);
  bool ends = false;
  if (whole == bytes.size() && !bytes.empty()) {
    grammar::PushdownAutomaton::ConfigId c = matcher_.config();
    for (char ch : bytes) c = automaton_->step(c, static_cast<uint8_t>(ch));
    ends = automaton_->accepts(c) && automaton_->viable_bytes(c).empty();
  }
  bytes.resize(whole);
  if (bytes.empty()) return {};
  std::vector<int32_t> ids = tokenizer.encode(bytes, /*add_special=*/false, /*parse_special=*/false);
  // The last token could merge with the bytes after the forced text: the model chooses it, unless the grammar
  // ends with it.
  if (!ends && !ids.empty()) ids.pop_back();
  const grammar::TokenTrie& trie = masker_->trie();
  size_t spelled = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    const bool usable = id >= 0 && id < trie.vocab_size() && !trie.spelling(id).empty() &&
                        bytes.compare(spelled, trie.spelling(id).size(), trie.spelling(id)) == 0;
    if (!usable) {
      ids.resize(i);
      break;
    }
    spelled += trie.spelling(id).size();
  }
  return ids;
}

}  // namespace deepmoe
