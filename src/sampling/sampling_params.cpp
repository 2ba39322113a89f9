#include "sampling/sampling_params.h"

#include <cmath>
#include <sstream>

namespace deepmoe {
namespace {

Error invalid(const std::string& field, const std::string& message) {
  return Error(message, ErrorContext{.field = field});
}

std::string show(double v) {
  std::ostringstream out;
  out << v;
  return out.str();
}

}  // namespace

std::optional<Error> validate(const SamplingParams& p, const SamplingLimits& limits) {
  // Each comparison is written so that NaN fails it.
  if (!(p.temperature >= 0.0) || !std::isfinite(p.temperature))
    return invalid("temperature", "must be a finite number >= 0 (0 means greedy), got " + show(p.temperature));
  if (p.top_k < 0) return invalid("top_k", "must be >= 0 (0 disables it), got " + std::to_string(p.top_k));
  if (!(p.top_p > 0.0 && p.top_p <= 1.0))
    return invalid("top_p", "must be in (0, 1] (1 disables it), got " + show(p.top_p));
  if (!(p.min_p >= 0.0 && p.min_p <= 1.0))
    return invalid("min_p", "must be in [0, 1] (0 disables it), got " + show(p.min_p));
  if (!(p.repetition_penalty > 0.0 && p.repetition_penalty <= limits.max_repetition_penalty))
    return invalid("repetition_penalty", "must be in (0, " + show(limits.max_repetition_penalty) +
                                             "] (1 disables it), got " + show(p.repetition_penalty));
  if (p.penalty_last_n < 0)
    return invalid("penalty_last_n",
                   "must be >= 0 (0 means the whole sequence), got " + std::to_string(p.penalty_last_n));
  const double bound = limits.max_abs_presence_frequency_penalty;
  if (!(std::fabs(p.presence_penalty) <= bound))
    return invalid("presence_penalty",
                   "must be in [-" + show(bound) + ", " + show(bound) + "], got " + show(p.presence_penalty));
  if (!(std::fabs(p.frequency_penalty) <= bound))
    return invalid("frequency_penalty",
                   "must be in [-" + show(bound) + ", " + show(bound) + "], got " + show(p.frequency_penalty));
  if (p.top_logprobs < 0 || p.top_logprobs > limits.max_top_logprobs)
    return invalid("top_logprobs", "must be in [0, " + std::to_string(limits.max_top_logprobs) + "], got " +
                                       std::to_string(p.top_logprobs));
  return std::nullopt;
}

std::optional<Error> validate_stop_strings(const std::vector<std::string>& stops, const StopLimits& limits) {
  if (stops.size() > limits.max_stop_strings)
    return invalid("stop", "has " + std::to_string(stops.size()) + " strings; at most " +
                               std::to_string(limits.max_stop_strings) + " are allowed");
  for (size_t i = 0; i < stops.size(); ++i) {
    if (stops[i].empty()) return invalid("stop", "string " + std::to_string(i) + " is empty");
    if (stops[i].size() > limits.max_stop_bytes)
      return invalid("stop", "string " + std::to_string(i) + " is " + std::to_string(stops[i].size()) +
                                 " bytes; at most " + std::to_string(limits.max_stop_bytes) + " are allowed");
  }
  return std::nullopt;
}

}  // namespace deepmoe
