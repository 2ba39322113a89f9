// Grammar-constrained generation: the per-request state that turns a compiled grammar (JSON Schema, GBNF, any
// JSON) into token masks for the sampler while a request generates. It owns the request's pushdown automaton,
// token masker and matcher (none of them is thread-safe, so each request has its own), over a vocabulary trie
// that all requests of a model share.
//
// The generation loop asks mask() before each sample, accept()s every generated token, ends the request when
// complete() (the grammar accepts and nothing but EOS may follow), and — where the grammar allows exactly one
// continuation — takes forced_tokens() without sampling them: the forced bytes tokenized canonically (the text
// tokenized on its own; the last token is left to the model unless the grammar ends there, since it could
// merge with what follows).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "grammar/grammar.h"
#include "grammar/grammar_matcher.h"
#include "grammar/token_trie.h"
#include "tokenizer/tokenizer.h"

namespace deepmoe {

// The vocabulary as the grammar layer sees it: each id's byte spelling (special tokens and ids past the
// tokenizer — padding up to the model's vocab_size — have none, so a grammar never allows them) and eos_id.
std::shared_ptr<const grammar::TokenTrie> grammar_vocabulary(const Tokenizer& tokenizer, int64_t vocab_size,
                                                             int32_t eos_id);

class GrammarConstraint {
 public:
  // eos_ids: every id that ends generation; all of them are allowed exactly where the grammar accepts (the
  // trie's own EOS id stands for them in the matcher).
  // allow_eos = false: EOS is never allowed (an output that must not end on its own).
  GrammarConstraint(const grammar::Grammar& grammar, std::shared_ptr<const grammar::TokenTrie> vocabulary,
                    std::vector<int32_t> eos_ids, bool allow_eos = true);

  // The tokens allowed next (one bit per id); valid until the next accept() or rollback(). Throws
  // deepmoe::Error when no token of the vocabulary can continue the grammar.
  std::span<const uint64_t> mask();
  // Advances by one generated token; false (and no change) when the grammar does not allow it.
  bool accept(int32_t token);
  // Undoes the last n accepted tokens.
  void rollback(size_t n);
  size_t accepted_tokens() const { return matcher_.steps(); }

  // The grammar is complete: it accepts here and no byte may follow, so only EOS is left.
  bool complete() const;
  // Whether `token` is one of the EOS ids.
  bool is_eos(int32_t token) const;

  // Tokens the grammar forces from here (at most max_bytes of forced text), tokenized canonically; empty when
  // the next token is a real choice. They are not accepted yet.
  std::vector<int32_t> forced_tokens(const Tokenizer& tokenizer, size_t max_bytes = 256);

  // The shortest text that completes the grammar from here (EOS allowed after it), by a breadth-first search
  // over the automaton's configurations (at most max_configs of them), preferring digits and letters among
  // equally short ones; nullopt when none is found within the bound.
  std::optional<std::string> shortest_completion(size_t max_configs = 4096);
  // That text's canonical tokens (all of them: EOS follows), not accepted yet; nullopt when there is none.
  std::optional<std::vector<int32_t>> completion_tokens(const Tokenizer& tokenizer);

  const grammar::GrammarMatcher& matcher() const { return matcher_; }

  // The canonical tokens of `bytes` (which may start inside a UTF-8 character: its continuation bytes become
  // single-byte tokens); nullopt when they cannot be spelled with tokens the grammar's vocabulary knows.
  std::optional<std::vector<int32_t>> tokenize(const Tokenizer& tokenizer, const std::string& bytes);

 private:
  std::shared_ptr<grammar::PushdownAutomaton> automaton_;
  std::shared_ptr<grammar::TokenMasker> masker_;
  grammar::GrammarMatcher matcher_;
  std::vector<int32_t> eos_ids_;
  grammar::TokenBitmask mask_;
  bool mask_valid_ = false;
  bool allow_eos_ = true;
  std::vector<int32_t> byte_tokens_;  // the token spelled by each single byte (-1: none); filled on first use
};

}  // namespace deepmoe
