#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/regex.h"

#include <pcre2.h>

#include <mutex>

#include "core/error.h"

namespace deepmoe {

struct Regex::Code {
  pcre2_code* code = nullptr;
  // JIT compilation happens on the first match, not at load: it is the costly part of compiling, and a loaded
  // tokenizer may never run this regex (DeepSeek-V3's Split sequence is replaced by a hand-written equivalent,
  // tokenizer_loader.cpp). JIT is an optimization; the interpreter gives the same matches when it is unavailable.
  std::once_flag jit_once;
  pcre2_code* jitted() {
    std::call_once(jit_once, [this] { pcre2_jit_compile(code, PCRE2_JIT_COMPLETE); });
    return code;
  }
  ~Code() {
    if (code) pcre2_code_free(code);
  }
};

namespace {

// Per-thread match state: PCRE2 match data and a JIT stack big enough for long whitespace runs.
struct MatchState {
  pcre2_match_data* data = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  pcre2_match_context* context = nullptr;
  MatchState() {
    data = pcre2_match_data_create(1, nullptr);
    jit_stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    context = pcre2_match_context_create(nullptr);
    if (context && jit_stack) pcre2_jit_stack_assign(context, nullptr, jit_stack);
    DEEPMOE_CHECK(data && context, "PCRE2 allocation failed");
  }
  ~MatchState() {
    pcre2_match_data_free(data);
    pcre2_match_context_free(context);
    if (jit_stack) pcre2_jit_stack_free(jit_stack);
  }
};

MatchState& match_state() {
  thread_local MatchState state;
  return state;
}

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof(buffer));
  return reinterpret_cast<const char*>(buffer);
}

}  // namespace

Regex::Regex(std::string_view pattern, bool literal) : pattern_(pattern), code_(std::make_unique<Code>()) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  uint32_t options = PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK;
  if (literal) options = (options & ~PCRE2_UCP) | PCRE2_LITERAL;  // LITERAL refuses UCP
  code_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options, &error_code,
                              &error_offset, nullptr);
  if (!code_->code) {
    throw Error("regex does not compile at offset " + std::to_string(error_offset) + ": " +
                pcre2_message(error_code) + " (pattern: " + std::string(pattern) + ")");
  }
}

Regex::~Regex() = default;

void Regex::find_all(std::string_view subject, std::vector<std::pair<size_t, size_t>>& matches) const {
  MatchState& state = match_state();
  auto* s = reinterpret_cast<PCRE2_SPTR>(subject.data());
  pcre2_code* code = code_->jitted();
  size_t offset = 0;
  while (offset < subject.size()) {
    int rc = pcre2_match(code, s, subject.size(), offset, PCRE2_NO_UTF_CHECK, state.data, state.context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) throw Error("regex match failed: " + pcre2_message(rc) + " (pattern: " + pattern_ + ")");
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(state.data);
    size_t begin = ov[0], end = ov[1];
    if (end > begin) {
      matches.emplace_back(begin, end);
      offset = end;
    } else {
      // An empty match produces no piece; step over one code point.
      offset = begin + 1;
      while (offset < subject.size() && (static_cast<unsigned char>(subject[offset]) & 0xC0) == 0x80) ++offset;
    }
  }
}

bool Regex::matches_at_start(std::string_view subject) const {
  MatchState& state = match_state();
  int rc = pcre2_match(code_->jitted(), reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(), 0,
                       PCRE2_NO_UTF_CHECK | PCRE2_ANCHORED, state.data, state.context);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) throw Error("regex match failed: " + pcre2_message(rc) + " (pattern: " + pattern_ + ")");
  return true;
}

}  // namespace deepmoe
