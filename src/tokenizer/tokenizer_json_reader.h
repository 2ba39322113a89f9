// Reading tokenizer.json in one SAX pass (nlohmann::json::sax_parse): the small members become an ordinary
// nlohmann DOM, but the two big ones — model.vocab (~128k entries for DeepSeek-V3) and model.merges (~127k) — are
// collected straight into flat vectors. Their DOM (a std::map node per vocabulary entry, a json string per merge)
// was most of the tokenizer's load time (the whole DOM parse of the 4.3 MB file took 0.13–0.25 s here,
// the SAX pass 0.03 s). Only tokenizer_loader.cpp includes this header (it pulls in nlohmann/json).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tokenizer/packed_strings.h"

namespace deepmoe {

// A problem found inside the collected members, reported when the loader reaches them (so the order in which
// errors are reported does not depend on where in the file the members stand).
struct TokenizerJsonProblem {
  size_t index = 0;  // position of the bad entry in the collected vector (which holds an empty entry there)
  std::string field;
  std::string message;
};

struct TokenizerJsonCollected {
  // model.vocab was an object and is here (the DOM then holds an empty object in its place): spelling i with
  // id vocab_ids[i], in file order; ids already range-checked.
  bool has_vocab = false;
  PackedStrings vocab_spellings;
  std::vector<int32_t> vocab_ids;
  std::optional<TokenizerJsonProblem> vocab_problem;  // the first bad entry

  // model.merges was an array and is here (the DOM then holds an empty array): merge i is the pair of strings
  // 2i, 2i + 1, whether written "left right" or ["left", "right"].
  bool has_merges = false;
  PackedStrings merge_halves;
  size_t merge_count() const { return merge_halves.size() / 2; }
  std::optional<TokenizerJsonProblem> merges_problem;  // the first malformed merge
};

// Largest token id accepted (bounds the id tables' memory; no real vocabulary comes close).
constexpr int64_t kMaxTokenId = (int64_t{1} << 24) - 1;

// Parses `text`; malformed JSON throws nlohmann::json::parse_error, as json::parse does.
nlohmann::json read_tokenizer_json(std::string_view text, TokenizerJsonCollected& collected);

}  // namespace deepmoe
