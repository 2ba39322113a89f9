#include "tokenizer/tokenizer_json_reader.h"

#include <algorithm>

namespace deepmoe {
namespace {

using json = nlohmann::json;

// nlohmann's SAX interface: builds the DOM as json::parse would (duplicate keys: the last wins), except that the
// values of model.vocab and model.merges go to TokenizerJsonCollected.
class Reader {
 public:
  explicit Reader(TokenizerJsonCollected& out) : out_(out) {}

  json take() { return std::move(root_); }

  bool null() { return scalar(json(nullptr)); }
  bool boolean(bool v) { return scalar(json(v)); }
  bool number_integer(json::number_integer_t v) {
    if (mode_ == Mode::Vocab && skip_ == 0) return vocab_id(v, std::to_string(v));
    return scalar(json(v));
  }
  bool number_unsigned(json::number_unsigned_t v) {
    if (mode_ == Mode::Vocab && skip_ == 0)
      return vocab_id(v > json::number_unsigned_t(kMaxTokenId) ? -1 : int64_t(v), std::to_string(v));
    return scalar(json(v));
  }
  bool number_float(json::number_float_t v, const std::string&) { return scalar(json(v)); }
  bool string(std::string& v) {
    if (mode_ == Mode::Merges && skip_ == 0) return merge_string(v);
    if (mode_ == Mode::None) return scalar(json(std::move(v)));
    return scalar(json());
  }
  bool binary(json::binary_t&) { return scalar(json()); }  // not produced by the JSON input format

  bool start_object(std::size_t) {
    if (mode_ != Mode::None) return nested_container();
    if (at_model_member("vocab")) {
      place(json::object());  // placeholder; the entries go to out_.vocab
      out_.has_vocab = true;
      out_.vocab_spellings.clear();
      out_.vocab_ids.clear();
      out_.vocab_problem.reset();
      mode_ = Mode::Vocab;
      return true;
    }
    open(json::object());
    return true;
  }
  bool key(std::string& k) {
    if (mode_ == Mode::None) {
      key_ = std::move(k);
    } else if (mode_ == Mode::Vocab && skip_ == 0) {
      vocab_key_.assign(k);  // a copy: the parser reuses its buffer for the next string
    }
    return true;
  }
  bool end_object() {
    if (skip_ > 0) return --skip_, true;
    if (mode_ == Mode::Vocab) return mode_ = Mode::None, true;
    close();
    return true;
  }
  bool start_array(std::size_t) {
    if (mode_ == Mode::Merges && skip_ == 0 && !in_pair_) {
      in_pair_ = true;
      pair_.clear();
      pair_ok_ = true;
      return true;
    }
    if (mode_ != Mode::None) return nested_container();
    if (at_model_member("merges")) {
      place(json::array());  // placeholder; the merges go to out_.merges
      out_.has_merges = true;
      out_.merge_halves.clear();
      out_.merges_problem.reset();
      mode_ = Mode::Merges;
      return true;
    }
    open(json::array());
    return true;
  }
  bool end_array() {
    if (skip_ > 0) return --skip_, true;
    if (mode_ == Mode::Merges) {
      if (in_pair_) {
        in_pair_ = false;
        if (pair_ok_ && pair_.size() == 2) {
          out_.merge_halves.push_back(pair_[0]);
          out_.merge_halves.push_back(pair_[1]);
        } else
          bad_merge("expected \"left right\" or [left, right]");
        return true;
      }
      mode_ = Mode::None;
      return true;
    }
    close();
    return true;
  }

  template <class Exception>
  bool parse_error(std::size_t, const std::string&, const Exception& e) {
    throw e;  // as json::parse: the same exception type and message
  }

 private:
  enum class Mode { None, Vocab, Merges };

  // The member being started is root["model"][name].
  bool at_model_member(const char* name) const {
    return stack_.size() == 2 && stack_[0]->is_object() && stack_[1]->is_object() && container_keys_[1] == "model" &&
           key_ == name;
  }

  json* place(json&& v) {
    if (stack_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    json& parent = *stack_.back();
    if (parent.is_array()) {
      parent.push_back(std::move(v));
      return &parent.back();
    }
    json& slot = parent[key_];
    slot = std::move(v);
    return &slot;
  }
  void open(json&& container) {
    const bool in_object = !stack_.empty() && stack_.back()->is_object();
    container_keys_.push_back(in_object ? key_ : std::string());
    stack_.push_back(place(std::move(container)));
  }
  void close() {
    stack_.pop_back();
    container_keys_.pop_back();
  }

  bool scalar(json&& v) {
    if (skip_ > 0) return true;
    if (mode_ == Mode::None) {
      place(std::move(v));
    } else if (mode_ == Mode::Vocab) {
      vocab_problem("expected an integer token id");
    } else if (in_pair_) {
      pair_ok_ = false;
    } else {
      bad_merge("expected \"left right\" or [left, right]");
    }
    return true;
  }

  // An object or array where the collected members want a scalar: a problem, and its contents are skipped.
  bool nested_container() {
    if (skip_ == 0) {
      if (mode_ == Mode::Vocab) {
        vocab_problem("expected an integer token id");
      } else if (in_pair_) {
        pair_ok_ = false;
      } else {
        bad_merge("expected \"left right\" or [left, right]");
        skip_ = 1;
        // A nested container outside a pair is one (bad) merge; the counter already moved on.
        return true;
      }
    }
    ++skip_;
    return true;
  }

  bool vocab_id(int64_t id, const std::string& text) {
    if (id < 0 || id > kMaxTokenId) {
      vocab_problem("token id " + text + " out of range");
    } else {
      add_vocab(vocab_key_, int32_t(id));
    }
    return true;
  }
  void vocab_problem(std::string message) {
    if (!out_.vocab_problem)
      out_.vocab_problem =
          TokenizerJsonProblem{out_.vocab_ids.size(), "model.vocab[\"" + vocab_key_ + "\"]", std::move(message)};
    add_vocab({}, 0);  // keeps the entry's place: the loader stops there
  }

  void add_vocab(std::string_view spelling, int32_t id) {
    out_.vocab_spellings.push_back(spelling);
    out_.vocab_ids.push_back(id);
  }

  bool merge_string(std::string& s) {
    if (in_pair_) {
      pair_.push_back(std::move(s));
      return true;
    }
    const size_t space = s.find(' ');
    if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
      bad_merge("expected \"left right\"");
      return true;
    }
    out_.merge_halves.push_back(std::string_view(s).substr(0, space));
    out_.merge_halves.push_back(std::string_view(s).substr(space + 1));
    return true;
  }
  void bad_merge(std::string message) {
    if (!out_.merges_problem)
      out_.merges_problem = TokenizerJsonProblem{
          out_.merge_count(), "model.merges[" + std::to_string(out_.merge_count()) + "]", std::move(message)};
    out_.merge_halves.push_back({});  // keeps the merge's place: the loader stops there
    out_.merge_halves.push_back({});
  }

  TokenizerJsonCollected& out_;
  json root_;
  std::vector<json*> stack_;                // open containers of the DOM, outermost first
  std::vector<std::string> container_keys_;  // the key each open container sits under ("" in an array)
  std::string key_;                         // the last key read in the innermost open object
  Mode mode_ = Mode::None;
  int skip_ = 0;  // depth inside a container that a collected member must not hold
  std::string vocab_key_;
  bool in_pair_ = false, pair_ok_ = true;
  std::vector<std::string> pair_;
};

}  // namespace

json read_tokenizer_json(std::string_view text, TokenizerJsonCollected& collected) {
  // Room for everything the text could hold, so the buffers never grow by copying (DeepSeek-V3: ~1.3 MB of
  // spellings and halves in a 4.3 MB file). Pages that are never written are never touched, so the reserve
  // costs nothing beyond them.
  const size_t n = std::min<size_t>(text.size(), size_t(64) << 20);  // no more for larger (hostile) files
  collected.vocab_spellings.reserve(n / 6, n / 2);
  collected.vocab_ids.reserve(n / 6);
  collected.merge_halves.reserve(n / 3, n / 2);
  Reader reader(collected);
  json::sax_parse(text, &reader);
  return reader.take();
}

}  // namespace deepmoe
