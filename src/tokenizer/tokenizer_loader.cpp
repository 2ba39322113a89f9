// Reading tokenizer.json (HF tokenizers' serialization) and tokenizer_config.json (transformers) into a
// Tokenizer. Everything outside the supported subset is rejected by name; hostile values (ids out of range,
// wrong JSON types, merges naming unknown tokens) are errors naming the field (the reliability checklist §1 T1).
#include <nlohmann/json.hpp>

#include <filesystem>
#include <unordered_set>

#include "core/error.h"
#include "core/mapped_file.h"
#include "core/warning.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/deepseek_v3_pre_tokenizer.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/tokenizer_json_reader.h"
#include "tokenizer/utf8.h"

namespace deepmoe {
namespace {

using json = nlohmann::json;

[[noreturn]] void fail(const std::string& field, const std::string& message) {
  throw Error(message, ErrorContext{"", "", field});
}

const json* member(const json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  return (it == obj.end() || it->is_null()) ? nullptr : &*it;
}

std::string get_string(const json& obj, const char* key, const std::string& field) {
  const json* v = member(obj, key);
  if (!v || !v->is_string()) fail(field + "." + key, "expected a string");
  return v->get<std::string>();
}

bool get_bool(const json& obj, const char* key, bool fallback, const std::string& field) {
  const json* v = member(obj, key);
  if (!v) return fallback;
  if (!v->is_boolean()) fail(field + "." + key, "expected true or false");
  return v->get<bool>();
}

int32_t get_id(const json& v, const std::string& field) {
  if (!v.is_number_integer()) fail(field, "expected an integer token id");
  int64_t id = v.get<int64_t>();
  if (id < 0 || id > kMaxTokenId) fail(field, "token id " + std::to_string(id) + " out of range");
  return static_cast<int32_t>(id);
}

std::string type_of(const json& obj, const std::string& field) {
  if (!obj.is_object()) fail(field, "expected an object");
  return get_string(obj, "type", field);
}

void check_valid_utf8(std::string_view s, const std::string& field) {
  if (!utf8::is_valid(s)) fail(field, "not valid UTF-8");
}

// --- normalizer / pre-tokenizer / decoder / post-processor ---------------------------------------------------

void check_normalizer(const json& root) {
  const json* n = member(root, "normalizer");
  if (!n) return;
  std::string type = type_of(*n, "normalizer");
  const json* list = member(*n, "normalizers");
  if (type == "Sequence" && list && list->is_array() && list->empty()) return;
  fail("normalizer", "unsupported normalizer \"" + type + "\" (only none or an empty Sequence)");
}

void add_pre_tokenizer_steps(const json& pt, const std::string& field,
                             std::vector<std::unique_ptr<PreTokenizerStep>>& steps) {
  std::string type = type_of(pt, field);
  if (type == "Sequence") {
    const json* list = member(pt, "pretokenizers");
    if (!list || !list->is_array()) fail(field + ".pretokenizers", "expected an array");
    for (size_t i = 0; i < list->size(); ++i)
      add_pre_tokenizer_steps((*list)[i], field + ".pretokenizers[" + std::to_string(i) + "]", steps);
  } else if (type == "Split") {
    const json* pattern = member(pt, "pattern");
    if (!pattern || !pattern->is_object()) fail(field + ".pattern", "expected {\"Regex\": ...} or {\"String\": ...}");
    bool literal = pattern->contains("String");
    std::string text = get_string(*pattern, literal ? "String" : "Regex", field + ".pattern");
    check_valid_utf8(text, field + ".pattern");
    SplitBehavior behavior;
    try {
      behavior = parse_split_behavior(get_string(pt, "behavior", field));
    } catch (const Error& e) {
      fail(field + ".behavior", e.message());
    }
    try {
      steps.push_back(std::make_unique<SplitStep>(text, literal, behavior, get_bool(pt, "invert", false, field)));
    } catch (const Error& e) {
      if (!e.context().field.empty()) throw;
      fail(field + ".pattern", e.message());
    }
  } else if (type == "ByteLevel") {
    if (get_bool(pt, "add_prefix_space", false, field))
      fail(field + ".add_prefix_space", "ByteLevel add_prefix_space=true is not supported");
    if (get_bool(pt, "use_regex", true, field))
      steps.push_back(std::make_unique<SplitStep>(kGpt2SplitPattern, false, SplitBehavior::kIsolated, false));
  } else {
    fail(field, "unsupported pre-tokenizer \"" + type + "\"");
  }
}

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& root) {
  std::vector<std::unique_ptr<PreTokenizerStep>> steps;
  if (const json* pt = member(root, "pre_tokenizer")) add_pre_tokenizer_steps(*pt, "pre_tokenizer", steps);
  // DeepSeek-V3's sequence has a hand-written equivalent, several times faster (proven against these regexes
  // in tests/tokenizer/pre_tokenizer_equivalence_test.cpp).
  if (DeepSeekV3PreTokenizer::matches(steps)) return std::make_unique<DeepSeekV3PreTokenizer>();
  return std::make_unique<SequencePreTokenizer>(std::move(steps));
}

void check_decoder(const json& root) {
  const json* d = member(root, "decoder");
  if (!d) fail("decoder", "missing decoder (only ByteLevel is supported)");
  std::string type = type_of(*d, "decoder");
  if (type != "ByteLevel") fail("decoder", "unsupported decoder \"" + type + "\" (only ByteLevel)");
}

// HF TemplateProcessing "single" template: SpecialToken entries before / after the sequence A.
void read_template(const json& tp, Tokenizer::Impl& impl, const std::string& field) {
  const json* single = member(tp, "single");
  if (!single || !single->is_array()) fail(field + ".single", "expected an array");
  const json* specials = member(tp, "special_tokens");
  bool seen_sequence = false;
  for (size_t i = 0; i < single->size(); ++i) {
    const json& item = (*single)[i];
    std::string f = field + ".single[" + std::to_string(i) + "]";
    if (const json* seq = member(item, "Sequence")) {
      if (get_string(*seq, "id", f + ".Sequence") != "A") fail(f, "single template may only use sequence A");
      seen_sequence = true;
    } else if (const json* sp = member(item, "SpecialToken")) {
      std::string name = get_string(*sp, "id", f + ".SpecialToken");
      const json* entry = specials ? member(*specials, name.c_str()) : nullptr;
      const json* ids = entry ? member(*entry, "ids") : nullptr;
      if (!ids || !ids->is_array()) fail(field + ".special_tokens", "no ids for \"" + name + "\"");
      for (const json& id : *ids) (seen_sequence ? impl.suffix : impl.prefix).push_back(get_id(id, f));
    } else {
      fail(f, "expected Sequence or SpecialToken");
    }
  }
}

void read_post_processor(const json& root, Tokenizer::Impl& impl) {
  const json* pp = member(root, "post_processor");
  if (!pp) return;
  std::vector<const json*> items{pp};
  if (type_of(*pp, "post_processor") == "Sequence") {
    const json* list = member(*pp, "processors");
    if (!list || !list->is_array()) fail("post_processor.processors", "expected an array");
    items.clear();
    for (const json& p : *list) items.push_back(&p);
  }
  for (const json* p : items) {
    std::string type = type_of(*p, "post_processor");
    if (type == "ByteLevel") continue;  // only adjusts offsets
    if (type == "TemplateProcessing") {
      read_template(*p, impl, "post_processor");
      continue;
    }
    fail("post_processor", "unsupported post-processor \"" + type + "\"");
  }
}

// --- model ---------------------------------------------------------------------------------------------------

void grow(Tokenizer::Impl& impl, int32_t id) {
  if (id >= static_cast<int32_t>(impl.bytes.size())) {
    impl.bytes.resize(id + 1);
    impl.pieces.resize(id + 1);
    impl.special.resize(id + 1, 0);
  }
}

// Bytes a token decodes to under HF's ByteLevel decoder: the byte-level spelling mapped back to bytes, or the
// token's own UTF-8 when it holds a character outside the alphabet (added tokens such as <｜User｜>).
std::string decoded_bytes(const std::string& piece) {
  auto b = byte_level::decode(piece);
  return b ? *b : piece;
}

void read_model(const json& root, const TokenizerJsonCollected& collected, Tokenizer::Impl& impl) {
  const json* model = member(root, "model");
  if (!model || !model->is_object()) fail("model", "missing model");
  if (member(*model, "type") && get_string(*model, "type", "model") != "BPE")
    fail("model.type", "unsupported model \"" + get_string(*model, "type", "model") + "\" (only BPE)");
  if (get_bool(*model, "byte_fallback", false, "model")) fail("model.byte_fallback", "byte_fallback is not supported");
  if (const json* d = member(*model, "dropout"); d && !(d->is_number() && d->get<double>() == 0.0))
    fail("model.dropout", "BPE dropout is not supported");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (const json* v = member(*model, key); v && !(v->is_string() && v->get<std::string>().empty()))
      fail(std::string("model.") + key, "not supported");
  }
  bool ignore_merges = get_bool(*model, "ignore_merges", false, "model");

  // The vocabulary and the merges themselves were collected by the reader (tokenizer_json_reader.h); the DOM
  // only holds an empty object / array in their place.
  const json* vocab = member(*model, "vocab");
  if (!vocab || !vocab->is_object()) fail("model.vocab", "expected an object of token -> id");
  DEEPMOE_CHECK(collected.has_vocab, "model.vocab not collected by the reader");
  const size_t n_vocab = collected.vocab_ids.size();
  int32_t max_id = -1;
  for (int32_t id : collected.vocab_ids) max_id = std::max(max_id, id);
  // Added tokens usually take ids past the vocabulary's: size the id tables for both at once (growing them
  // again later would copy every string).
  if (const json* added = member(root, "added_tokens"); added && added->is_array())
    for (const json& t : *added)
      if (const json* id = member(t, "id"); id && id->is_number_integer() && id->get<int64_t>() <= kMaxTokenId)
        max_id = std::max(max_id, int32_t(id->get<int64_t>()));
  if (max_id >= 0) grow(impl, max_id);
  TokenIndex& spelling_to_id = impl.piece_to_id;
  spelling_to_id.reserve(n_vocab + 1024);  // room for the added tokens too
  for (size_t i = 0; i < n_vocab; ++i) {
    if (collected.vocab_problem && collected.vocab_problem->index == i)
      fail(collected.vocab_problem->field, collected.vocab_problem->message);
    const std::string_view spelling = collected.vocab_spellings[i];
    const int32_t id = collected.vocab_ids[i];
    check_valid_utf8(spelling, "model.vocab");
    if (!impl.pieces[id].empty())
      fail("model.vocab[\"" + std::string(spelling) + "\"]", "id " + std::to_string(id) + " is used twice");
    if (!spelling_to_id.insert(spelling, id))
      fail("model.vocab[\"" + std::string(spelling) + "\"]", "token \"" + std::string(spelling) + "\" is listed twice");
    impl.pieces[id] = spelling;
    impl.bytes[id] = decoded_bytes(impl.pieces[id]);
  }

  const json* merges = member(*model, "merges");
  if (!merges || !merges->is_array()) fail("model.merges", "expected an array");
  DEEPMOE_CHECK(collected.has_merges, "model.merges not collected by the reader");
  std::vector<BpeModel::Merge> resolved;
  resolved.reserve(collected.merge_count());
  std::string joined;  // reused: no allocation per merge
  for (size_t i = 0; i < collected.merge_count(); ++i) {
    if (collected.merges_problem && collected.merges_problem->index == i)
      fail(collected.merges_problem->field, collected.merges_problem->message);
    const std::string_view left = collected.merge_halves[2 * i], right = collected.merge_halves[2 * i + 1];
    joined.assign(left).append(right);
    const int32_t l = spelling_to_id.find(left), r = spelling_to_id.find(right), j = spelling_to_id.find(joined);
    if (l < 0 || r < 0)
      fail("model.merges[" + std::to_string(i) + "]",
           "merge \"" + std::string(left) + " " + std::string(right) + "\" names a token not in the vocabulary");
    if (j < 0)
      fail("model.merges[" + std::to_string(i) + "]", "merge result \"" + joined + "\" is not in the vocabulary");
    resolved.push_back({l, r, j});
  }
  try {
    impl.bpe = std::make_unique<BpeModel>(spelling_to_id, resolved, ignore_merges);
  } catch (const Error& e) {
    fail("model.vocab", e.message());
  }
}

void read_added_tokens(const json& root, Tokenizer::Impl& impl) {
  std::vector<AddedToken> tokens;
  if (const json* list = member(root, "added_tokens")) {
    if (!list->is_array()) fail("added_tokens", "expected an array");
    for (size_t i = 0; i < list->size(); ++i) {
      const json& t = (*list)[i];
      std::string field = "added_tokens[" + std::to_string(i) + "]";
      if (!t.is_object()) fail(field, "expected an object");
      AddedToken tok;
      const json* id = member(t, "id");
      if (!id) fail(field + ".id", "missing");
      tok.id = get_id(*id, field + ".id");
      tok.content = get_string(t, "content", field);
      check_valid_utf8(tok.content, field + ".content");
      if (tok.content.empty()) fail(field + ".content", "empty added token");
      tok.special = get_bool(t, "special", false, field);
      tok.lstrip = get_bool(t, "lstrip", false, field);
      tok.rstrip = get_bool(t, "rstrip", false, field);
      tok.single_word = get_bool(t, "single_word", false, field);
      tok.normalized = get_bool(t, "normalized", !tok.special, field);
      grow(impl, tok.id);
      impl.pieces[tok.id] = tok.content;
      impl.bytes[tok.id] = decoded_bytes(tok.content);
      impl.special[tok.id] = tok.special;
      impl.piece_to_id.insert_or_assign(tok.content, tok.id);
      tokens.push_back(std::move(tok));
    }
  }
  impl.added = AddedTokenMatcher(std::move(tokens));
}

// tokenizer_config.json: {"bos_token": "..."} or {"bos_token": {"content": "..."}}.
int32_t config_token(const json& config, const char* key, const Tokenizer::Impl& impl) {
  const json* v = member(config, key);
  if (!v) return -1;
  std::string content;
  if (v->is_string()) {
    content = v->get<std::string>();
  } else if (v->is_object()) {
    content = get_string(*v, "content", key);
  } else {
    fail(key, "expected a string or an object with \"content\"");
  }
  const int32_t id = impl.piece_to_id.find(content);
  if (id < 0) fail(key, "token \"" + content + "\" is not in the vocabulary");
  return id;
}

void read_config(const json& config, Tokenizer::Impl& impl) {
  impl.bos = config_token(config, "bos_token", impl);
  impl.eos = config_token(config, "eos_token", impl);
  // transformers' LlamaTokenizerFast rebuilds the post-processor from add_bos_token / add_eos_token (default
  // true / false for Llama classes); other classes keep tokenizer.json's template unless the keys are set.
  bool llama = member(config, "tokenizer_class") && (*member(config, "tokenizer_class")).is_string() &&
               (*member(config, "tokenizer_class")).get<std::string>().rfind("Llama", 0) == 0;
  bool has_bos_key = member(config, "add_bos_token") != nullptr;
  bool has_eos_key = member(config, "add_eos_token") != nullptr;
  if (!llama && !has_bos_key && !has_eos_key) return;
  bool add_bos = get_bool(config, "add_bos_token", llama, "tokenizer_config");
  bool add_eos = get_bool(config, "add_eos_token", false, "tokenizer_config");
  if (add_bos && impl.bos < 0) fail("add_bos_token", "add_bos_token is set but there is no bos_token");
  if (add_eos && impl.eos < 0) fail("add_eos_token", "add_eos_token is set but there is no eos_token");
  impl.prefix.clear();
  impl.suffix.clear();
  if (add_bos) impl.prefix.push_back(impl.bos);
  if (add_eos) impl.suffix.push_back(impl.eos);
}

// Parses text (through read_tokenizer_json when `collected` is given); a syntax error names `origin`.
json parse(std::string_view text, const std::string& origin, TokenizerJsonCollected* collected = nullptr) {
  try {
    return collected ? read_tokenizer_json(text, *collected) : json::parse(text);
  } catch (const json::exception& e) {
    throw Error(std::string("malformed JSON: ") + e.what(), ErrorContext{origin, "", ""});
  }
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_json(std::string_view tokenizer_json, std::string_view config_json,
                                                const std::string& origin) {
  auto impl = std::make_unique<Impl>();
  std::string current = origin;
  try {
    TokenizerJsonCollected collected;
    const json root = parse(tokenizer_json, origin, &collected);
    if (!root.is_object()) fail("", "expected a JSON object");
    for (const char* key : {"truncation", "padding"})
      if (member(root, key)) fail(key, std::string(key) + " is not supported (must be null)");
    check_normalizer(root);
    read_model(root, collected, *impl);
    read_added_tokens(root, *impl);
    impl->pre_tokenizer = make_pre_tokenizer(root);
    check_decoder(root);
    read_post_processor(root, *impl);
    if (!config_json.empty()) {
      current = std::filesystem::path(origin).parent_path() / "tokenizer_config.json";
      if (origin.find('/') == std::string::npos) current = "tokenizer_config.json";
      json config = parse(config_json, current);
      if (!config.is_object()) fail("", "expected a JSON object");
      read_config(config, *impl);
    }
  } catch (const json::exception& e) {
    throw Error(std::string("unexpected JSON content: ") + e.what(), ErrorContext{current, "", ""});
  } catch (const Error& e) {
    throw e.with_file(current);
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string& dir) {
  namespace fs = std::filesystem;
  fs::path tokenizer_path = fs::path(dir) / "tokenizer.json";
  fs::path config_path = fs::path(dir) / "tokenizer_config.json";
  if (!fs::exists(tokenizer_path))
    throw Error("no tokenizer.json in model folder " + dir, ErrorContext{tokenizer_path.string(), "", ""});
  // Mapped rather than read: the text is parsed once, and a copy would only add page faults (load time).
  const auto tokenizer_json = MappedFile::open(tokenizer_path.string());
  constexpr size_t kMaxTokenizerJsonBytes = size_t(1) << 30;  // as read_text_file's limit
  if (tokenizer_json->size() > kMaxTokenizerJsonBytes)
    throw Error("file is " + std::to_string(tokenizer_json->size()) + " bytes, more than the limit of " +
                    std::to_string(kMaxTokenizerJsonBytes),
                ErrorContext{tokenizer_path.string(), "", ""});
  const bool has_config = fs::exists(config_path);
  std::string config_json = has_config ? read_text_file(config_path.string()) : std::string();
  auto tokenizer =
      from_json(std::string_view(reinterpret_cast<const char*>(tokenizer_json->data()), tokenizer_json->size()),
                config_json, tokenizer_path.string());
  // Without tokenizer_config.json, BOS/EOS come from tokenizer.json alone; for DeepSeek models that means no BOS
  // before a prompt, which changes every output without any error.
  if (!has_config)
    warn_once("tokenizer.no_config:" + dir,
              "no tokenizer_config.json in " + dir + ": " +
                  (tokenizer->add_bos() ? std::string("BOS comes from tokenizer.json alone")
                                        : std::string("no BOS token is added to prompts")) +
                  ", and there is no chat template");
  return tokenizer;
}

}  // namespace deepmoe
