#include "tokenizer/bpe_trainer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <unordered_map>

#include "core/error.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/deepseek_v3_pre_tokenizer.h"
#include "tokenizer/utf8.h"

namespace deepmoe {
namespace {

using json = nlohmann::ordered_json;

uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

// Where the first NUL byte or ill-formed UTF-8 sequence starts, or npos.
size_t first_non_text_byte(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    uint32_t cp = 0;
    const size_t n = utf8::decode(text.substr(i), &cp);
    if (n == 0 || cp == 0) return i;
    i += n;
  }
  return std::string_view::npos;
}

}  // namespace

std::vector<std::string> BpeTrainerOptions::default_special_tokens() {
  return {"<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>",
          "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>",
          "<｜tool▁outputs▁begin｜>", "<｜tool▁outputs▁end｜>", "<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>",
          "<｜tool▁sep｜>"};
}

TrainedBpe train_bpe(std::string_view text, const BpeTrainerOptions& options) {
  if (text.empty()) throw Error("the training text is empty");
  if (size_t bad = first_non_text_byte(text); bad != std::string_view::npos)
    throw Error("the training text is not UTF-8 text: " +
                std::string(text[bad] == '\0' ? "a NUL byte" : "an invalid UTF-8 sequence") + " at byte offset " +
                std::to_string(bad) + " (binary file?)");
  const int64_t n_special = int64_t(options.special_tokens.size());
  if (options.vocab_size < n_special + 256)
    throw Error("vocabulary size " + std::to_string(options.vocab_size) + " is too small: it must hold the " +
                    std::to_string(n_special) + " special tokens and the 256 byte tokens",
                {"", "", "vocab"});
  TrainedBpe out;
  out.specials = options.special_tokens;
  out.text_bytes = int64_t(text.size());

  // Distinct pieces and how often each occurs.
  std::vector<Span> spans;
  DeepSeekV3PreTokenizer().split(text, spans);
  out.pieces = int64_t(spans.size());
  std::unordered_map<std::string_view, int64_t> piece_count;
  for (const Span& s : spans) ++piece_count[text.substr(s.begin, s.end - s.begin)];
  std::vector<std::pair<std::string_view, int64_t>> distinct(piece_count.begin(), piece_count.end());
  std::sort(distinct.begin(), distinct.end());  // a fixed order, so the result never depends on hashing

  // Symbols: 0..255 are bytes, 256 + m is merge m. Token ids add n_special later.
  std::vector<std::string> symbol_bytes;
  for (int b = 0; b < 256; ++b) symbol_bytes.emplace_back(1, char(b));
  std::vector<std::vector<int32_t>> words;
  std::vector<int64_t> counts;
  for (const auto& [piece, count] : distinct) {
    std::vector<int32_t> w;
    for (unsigned char ch : piece) w.push_back(ch);
    words.push_back(std::move(w));
    counts.push_back(count);
  }
  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::vector<int32_t>> pair_words;  // words that held the pair (may be stale)
  auto account = [&](size_t wi, int64_t sign) {
    const auto& w = words[wi];
    for (size_t i = 0; i + 1 < w.size(); ++i) {
      const uint64_t key = pair_key(w[i], w[i + 1]);
      pair_count[key] += sign * counts[wi];
      if (sign > 0) pair_words[key].push_back(int32_t(wi));
    }
  };
  for (size_t wi = 0; wi < words.size(); ++wi) account(wi, +1);

  const int64_t n_merges = options.vocab_size - n_special - 256;
  for (int64_t m = 0; m < n_merges; ++m) {
    // The most frequent pair; ties go to the pair whose bytes sort first (deterministic).
    uint64_t best = 0;
    int64_t best_count = 0;
    for (const auto& [key, count] : pair_count) {
      if (count < best_count || count <= 0) continue;
      if (count == best_count) {
        const auto a = int32_t(key >> 32), b = int32_t(uint32_t(key));
        const auto ba = int32_t(best >> 32), bb = int32_t(uint32_t(best));
        if (std::tie(symbol_bytes[size_t(a)], symbol_bytes[size_t(b)]) >=
            std::tie(symbol_bytes[size_t(ba)], symbol_bytes[size_t(bb)]))
          continue;
      }
      best = key;
      best_count = count;
    }
    if (best_count < std::max<int64_t>(options.min_pair_count, 1)) break;
    const int32_t left = int32_t(best >> 32), right = int32_t(uint32_t(best));
    const int32_t merged = int32_t(symbol_bytes.size());
    symbol_bytes.push_back(symbol_bytes[size_t(left)] + symbol_bytes[size_t(right)]);
    out.merges.emplace_back(symbol_bytes[size_t(left)], symbol_bytes[size_t(right)]);
    std::vector<int32_t> affected = std::move(pair_words[best]);
    pair_words.erase(best);
    std::sort(affected.begin(), affected.end());
    affected.erase(std::unique(affected.begin(), affected.end()), affected.end());
    for (int32_t wi : affected) {
      auto& w = words[size_t(wi)];
      bool has = false;
      for (size_t i = 0; i + 1 < w.size() && !has; ++i) has = w[i] == left && w[i + 1] == right;
      if (!has) continue;
      account(size_t(wi), -1);
      std::vector<int32_t> next;
      for (size_t i = 0; i < w.size();) {  // left to right, as the encoder applies a merge
        if (i + 1 < w.size() && w[i] == left && w[i + 1] == right) {
          next.push_back(merged);
          i += 2;
        } else {
          next.push_back(w[i++]);
        }
      }
      w = std::move(next);
      account(size_t(wi), +1);
    }
    pair_count.erase(best);
  }
  for (size_t wi = 0; wi < words.size(); ++wi) out.tokens += int64_t(words[wi].size()) * counts[wi];
  return out;
}

std::string TrainedBpe::tokenizer_json() const {
  const int64_t n_special = int64_t(specials.size());
  json vocab = json::object();
  json added = json::array();
  for (int64_t i = 0; i < n_special; ++i) {
    vocab[specials[size_t(i)]] = i;
    added.push_back({{"id", i}, {"content", specials[size_t(i)]}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}});
  }
  for (int b = 0; b < 256; ++b) vocab[byte_level::encode(std::string(1, char(b)))] = n_special + b;
  json merge_list = json::array();
  for (size_t m = 0; m < merges.size(); ++m) {
    const std::string l = byte_level::encode(merges[m].first), r = byte_level::encode(merges[m].second);
    vocab[l + r] = n_special + 256 + int64_t(m);
    merge_list.push_back(l + " " + r);
  }
  json pretokenizers = json::array();
  for (const char* pattern : DeepSeekV3PreTokenizer::kPatterns)
    pretokenizers.push_back(
        {{"type", "Split"}, {"pattern", {{"Regex", pattern}}}, {"behavior", "Isolated"}, {"invert", false}});
  pretokenizers.push_back({{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                           {"use_regex", false}});
  json root = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", {{"type", "Sequence"}, {"normalizers", json::array()}}},
      {"pre_tokenizer", {{"type", "Sequence"}, {"pretokenizers", pretokenizers}}},
      {"post_processor", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false},
                          {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
                 {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr}, {"fuse_unk", false},
                 {"byte_fallback", false}, {"vocab", vocab}, {"merges", merge_list}}},
  };
  return root.dump(1);
}

std::string TrainedBpe::tokenizer_config_json(const std::string& chat_template) const {
  auto token = [](const std::string& content) {
    return json{{"__type", "AddedToken"}, {"content", content}, {"lstrip", false}, {"normalized", true},
                {"rstrip", false}, {"single_word", false}};
  };
  json config = {{"add_bos_token", true}, {"add_eos_token", false}, {"clean_up_tokenization_spaces", false},
                 {"model_max_length", 131072}, {"tokenizer_class", "LlamaTokenizerFast"}};
  if (specials.size() >= 2) {
    config["bos_token"] = token(specials[0]);
    config["eos_token"] = token(specials[1]);
    config["pad_token"] = token(specials[1]);
  } else {
    config["add_bos_token"] = false;
  }
  if (!chat_template.empty()) config["chat_template"] = chat_template;
  return config.dump(1);
}

void write_bpe_tokenizer(const TrainedBpe& bpe, const std::string& chat_template, const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("cannot create folder " + dir + ": " + ec.message());
  for (const auto& [name, text] : {std::pair{std::string("tokenizer.json"), bpe.tokenizer_json()},
                                  std::pair{std::string("tokenizer_config.json"),
                                            bpe.tokenizer_config_json(chat_template)}}) {
    const fs::path path = fs::path(dir) / name;
    std::ofstream f(path, std::ios::binary);
    f << text << '\n';
    if (!f) throw Error("cannot write " + path.string());
  }
}

}  // namespace deepmoe
