#include "flag_errors.h"

#include <utility>

namespace deepmoe::tools {

std::string flag_for_field(const std::string& field) {
  static const std::pair<const char*, const char*> kFlags[] = {
      {"temperature", "--temperature"},
      {"top_k", "--top-k"},
      {"top_p", "--top-p"},
      {"min_p", "--min-p"},
      {"repetition_penalty", "--repeat-penalty"},
      {"penalty_last_n", "--repeat-last-n"},
      {"presence_penalty", "--presence-penalty"},
      {"frequency_penalty", "--frequency-penalty"},
      {"top_logprobs", "--logprobs"},
      {"stop", "--stop"},
      {"max_tokens", "-n/--max-tokens"},
  };
  for (const auto& [name, flag] : kFlags)
    if (field == name) return flag;
  return "";
}

Error flag_error(const Error& e) {
  ErrorContext context = e.context();
  if (context.field == "prompt") {
    context.field.clear();
    return Error("the prompt " + e.message(), context);
  }
  const std::string flag = flag_for_field(context.field);
  if (flag.empty()) return e;
  context.field.clear();
  return Error(flag + ": " + e.message(), context);
}

}  // namespace deepmoe::tools
