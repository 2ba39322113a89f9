#include "runtime/grammar_constraint.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <deque>
#include <unordered_map>

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

// Bytes in the order a completion prefers them: digits, lower- and upper-case letters, then the rest.
const std::array<uint8_t, 256>& completion_byte_order() {
  static const std::array<uint8_t, 256> order = [] {
    std::array<uint8_t, 256> o{};
    size_t n = 0;
    for (int b = '0'; b <= '9'; ++b) o[n++] = uint8_t(b);
    for (int b = 'a'; b <= 'z'; ++b) o[n++] = uint8_t(b);
    for (int b = 'A'; b <= 'Z'; ++b) o[n++] = uint8_t(b);
    for (int b = 0; b < 256; ++b)
      if (!std::isalnum(b)) o[n++] = uint8_t(b);
    return o;
  }();
  return order;
}

// Whether `ids` spell exactly `bytes` with tokens the trie knows.
bool spells(const grammar::TokenTrie& trie, const std::vector<int32_t>& ids, const std::string& bytes) {
  size_t at = 0;
  for (int32_t id : ids) {
    if (id < 0 || id >= trie.vocab_size()) return false;
    const std::string& s = trie.spelling(id);
    if (s.empty() || bytes.compare(at, s.size(), s) != 0) return false;
    at += s.size();
  }
  return at == bytes.size();
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
                                     std::vector<int32_t> eos_ids, bool allow_eos)
    : automaton_(grammar::matches_nothing(g)
                     ? throw Error("grammar: matches no output at all (a false schema, an empty enum, or branches "
                                   "that contradict each other)", ErrorContext{.field = "grammar"})
                     : std::make_shared<grammar::PushdownAutomaton>(g)),
      masker_(std::make_shared<grammar::TokenMasker>(automaton_, vocabulary)),
      matcher_(automaton_, masker_),
      eos_ids_(std::move(eos_ids)),
      mask_(grammar::mask_words(vocabulary->vocab_size())),
      allow_eos_(allow_eos) {
  if (vocabulary->eos_id() >= 0) eos_ids_.push_back(vocabulary->eos_id());
  std::erase_if(eos_ids_, [&](int32_t id) { return id < 0 || id >= vocabulary->vocab_size(); });
  std::sort(eos_ids_.begin(), eos_ids_.end());
  eos_ids_.erase(std::unique(eos_ids_.begin(), eos_ids_.end()), eos_ids_.end());
}

std::span<const uint64_t> GrammarConstraint::mask() {
  if (!mask_valid_) {
    matcher_.fill_mask(mask_);
    if (!matcher_.is_terminated() && matcher_.is_accepted() && allow_eos_)
      for (int32_t id : eos_ids_) grammar::mask_set(mask_, id);
    if (!allow_eos_)
      for (int32_t id : eos_ids_) mask_[size_t(id) >> 6] &= ~(uint64_t(1) << (id & 63));
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

std::optional<std::string> GrammarConstraint::shortest_completion(size_t max_configs) {
  using Config = grammar::PushdownAutomaton::ConfigId;
  if (matcher_.is_terminated()) return std::string();
  const Config start = matcher_.config();
  if (automaton_->accepts(start)) return std::string();
  std::unordered_map<Config, std::pair<Config, uint8_t>> parent;  // how each configuration was first reached
  parent.emplace(start, std::pair<Config, uint8_t>{grammar::PushdownAutomaton::kDead, 0});
  std::deque<Config> queue{start};
  try {
    while (!queue.empty()) {
      const Config c = queue.front();
      queue.pop_front();
      const grammar::ByteSet viable = automaton_->viable_bytes(c);  // a copy: step() may grow the table
      for (const uint8_t b : completion_byte_order()) {
        if (!viable.test(b)) continue;
        const Config n = automaton_->step(c, b);
        if (n == grammar::PushdownAutomaton::kDead || parent.count(n)) continue;
        parent.emplace(n, std::pair<Config, uint8_t>{c, b});
        if (automaton_->accepts(n)) {
          std::string text;
          for (Config at = n; at != start; at = parent.at(at).first) text.push_back(char(parent.at(at).second));
          std::reverse(text.begin(), text.end());
          return text;
        }
        if (parent.size() >= max_configs) return std::nullopt;
        queue.push_back(n);
      }
    }
  } catch (const Error&) {
    // An automaton limit (too many configurations or parses): no completion within bounds.
  }
  return std::nullopt;
}

std::optional<std::vector<int32_t>> GrammarConstraint::tokenize(const Tokenizer& tokenizer, const std::string& bytes) {
  const grammar::TokenTrie& trie = masker_->trie();
  std::vector<int32_t> ids;
  size_t i = 0;
  if (i < bytes.size() && (uint8_t(bytes[i]) & 0xC0) == 0x80) {
    if (byte_tokens_.empty()) {
      byte_tokens_.assign(256, -1);
      for (int32_t id = 0; id < trie.vocab_size(); ++id)
        if (trie.spelling(id).size() == 1 && byte_tokens_[uint8_t(trie.spelling(id)[0])] < 0)
          byte_tokens_[uint8_t(trie.spelling(id)[0])] = id;
    }
    for (; i < bytes.size() && (uint8_t(bytes[i]) & 0xC0) == 0x80; ++i) {
      const int32_t id = byte_tokens_[uint8_t(bytes[i])];
      if (id < 0) return std::nullopt;
      ids.push_back(id);
    }
  }
  const std::string rest = bytes.substr(i);
  if (whole_utf8_prefix(rest) != rest.size()) return std::nullopt;
  if (!rest.empty()) {
    const std::vector<int32_t> more = tokenizer.encode(rest, /*add_special=*/false, /*parse_special=*/false);
    if (!spells(trie, more, rest)) return std::nullopt;
    ids.insert(ids.end(), more.begin(), more.end());
  }
  return ids;
}

std::optional<std::vector<int32_t>> GrammarConstraint::completion_tokens(const Tokenizer& tokenizer) {
  const std::optional<std::string> text = shortest_completion();
  if (!text) return std::nullopt;
  return tokenize(tokenizer, *text);
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
  std::optional<std::vector<int32_t>> ids = tokenize(tokenizer, bytes);
  if (!ids) return {};
  // The last token could merge with the bytes after the forced text: the model chooses it, unless the grammar
  // ends with it.
  if (!ends && !ids->empty()) ids->pop_back();
  return *ids;
}

}  // namespace deepmoe
