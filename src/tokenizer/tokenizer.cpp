#include "tokenizer/tokenizer.h"

#include <string>

#include "core/thread_pool.h"
#include "core/warning.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/utf8.h"

namespace deepmoe {
namespace {

// Models pad their vocabulary past the tokenizer's last id (V3: 129280 rows, 128815 tokens); a sampled padding id
// has no text, which is easy to miss when it silently decodes to nothing.
void warn_id_without_token(int32_t id, int32_t vocab_size) {
  warn_once("tokenizer.id_without_token",
            "token id " + std::to_string(id) + " has no entry in the tokenizer (its ids are 0.." +
                std::to_string(vocab_size - 1) + "); such ids decode to no text");
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special, bool parse_special) const {
  std::string repaired;
  if (!utf8::is_valid(text)) {
    warn_once("tokenizer.invalid_utf8",
              "the text to encode is not valid UTF-8; each invalid byte sequence was replaced by U+FFFD");
    repaired = utf8::repair(text);
    text = repaired;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (add_special) ids.insert(ids.end(), impl_->prefix.begin(), impl_->prefix.end());
  thread_local std::vector<AddedTokenMatcher::Segment> segments;
  thread_local std::vector<Span> pieces;
  segments.clear();
  impl_->added.split(text, parse_special, segments);
  for (const auto& seg : segments) {
    if (seg.id >= 0) {
      ids.push_back(seg.id);
      continue;
    }
    std::string_view part = text.substr(seg.begin, seg.end - seg.begin);
    pieces.clear();
    impl_->pre_tokenizer->split(part, pieces);
    for (const Span& p : pieces) impl_->bpe->encode_piece(part.substr(p.begin, p.end - p.begin), ids);
  }
  if (add_special) ids.insert(ids.end(), impl_->suffix.begin(), impl_->suffix.end());
  return ids;
}

std::vector<std::vector<int32_t>> Tokenizer::encode_batch(std::span<const std::string> texts, bool add_special,
                                                          bool parse_special, ThreadPool* pool) const {
  std::vector<std::vector<int32_t>> out(texts.size());
  parallel_for(pool, static_cast<int64_t>(texts.size()), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[i] = encode(texts[i], add_special, parse_special);
  });
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string raw;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) {
      warn_id_without_token(id, vocab_size());
      continue;
    }
    if (skip_special && impl_->special[id]) continue;
    raw += impl_->bytes[id];
  }
  return utf8::repair(raw);
}

const std::string& Tokenizer::token_bytes(int32_t id) const {
  static const std::string empty;
  return (id < 0 || id >= vocab_size()) ? empty : impl_->bytes[id];
}

const std::string& Tokenizer::token_piece(int32_t id) const {
  static const std::string empty;
  return (id < 0 || id >= vocab_size()) ? empty : impl_->pieces[id];
}

int32_t Tokenizer::token_to_id(std::string_view piece) const {
  return impl_->piece_to_id.find(piece);
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(impl_->bytes.size()); }
int32_t Tokenizer::bos_id() const { return impl_->bos; }
int32_t Tokenizer::eos_id() const { return impl_->eos; }
bool Tokenizer::add_bos() const { return !impl_->prefix.empty(); }
bool Tokenizer::add_eos() const { return !impl_->suffix.empty(); }
bool Tokenizer::is_special(int32_t id) const { return id >= 0 && id < vocab_size() && impl_->special[id]; }

StreamingDetokenizer::StreamingDetokenizer(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(tokenizer), skip_special_(skip_special) {}

std::string StreamingDetokenizer::push(int32_t id) {
  if (skip_special_ && tokenizer_.is_special(id)) return {};
  if (id < 0 || id >= tokenizer_.vocab_size()) warn_id_without_token(id, tokenizer_.vocab_size());
  pending_ += tokenizer_.token_bytes(id);
  // Everything but a trailing proper prefix of a sequence is final: lossy decoding of it cannot change when
  // more bytes arrive.
  size_t hold = utf8::incomplete_tail(pending_);
  std::string out = utf8::repair(std::string_view(pending_).substr(0, pending_.size() - hold));
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string StreamingDetokenizer::flush() {
  std::string out = utf8::repair(pending_);
  pending_.clear();
  return out;
}

}  // namespace deepmoe
