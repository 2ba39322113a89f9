// Token healing: a prompt that ends inside what would be a longer token (`http:` before `//`, a trailing space
// before a word, a partial word) biases the model, which never saw that token boundary in training. The last
// prompt token(s) are backed off, and the first generated tokens are constrained to start with the removed
// bytes — so the model may choose the longer token that spans the boundary, as the unhealed text would be
// tokenized. The removed bytes are not output again.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "grammar/grammar.h"
#include "grammar/token_trie.h"
#include "tokenizer/tokenizer.h"

namespace deepmoe {

struct HealedPrompt {
  std::vector<int32_t> tokens;  // the prompt without the backed-off tokens
  std::string removed;          // their bytes, which the generated text must start with (empty: nothing healed)
};

// Backs off the last k tokens of `prompt` (k <= max_tokens, stopping once max_bytes bytes are removed) for the
// largest k whose bytes are a proper prefix of some token of `vocabulary` — a token that could span the
// boundary. Special tokens are never backed off, and at least one prompt token stays.
HealedPrompt heal_prompt(std::span<const int32_t> prompt, const grammar::TokenTrie& vocabulary,
                         size_t max_tokens = 4, size_t max_bytes = 7);

// The grammar of an output that starts with `prefix`: `prefix` followed by `rest`'s language, or by any bytes
// when `rest` is null.
grammar::Grammar prefixed_grammar(const std::string& prefix, const grammar::Grammar* rest);

}  // namespace deepmoe
