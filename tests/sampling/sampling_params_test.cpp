#include "sampling/sampling_params.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>

namespace deepmoe {
namespace {

TEST(SamplingParams, DefaultsAndBoundaryValuesAreValid) {
  EXPECT_FALSE(validate(SamplingParams{}).has_value());
  SamplingParams p;
  p.temperature = 0.0;
  p.top_k = 1;
  p.top_p = 1.0;
  p.min_p = 1.0;
  p.repetition_penalty = 100.0;
  p.presence_penalty = -2.0;
  p.frequency_penalty = 2.0;
  p.top_logprobs = 20;
  EXPECT_FALSE(validate(p).has_value());
}

struct BadCase {
  const char* field;
  std::function<void(SamplingParams&)> set;
};

TEST(SamplingParams, EachInvalidValueIsRejectedNamingTheParameter) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  const BadCase cases[] = {
      {"temperature", [](SamplingParams& p) { p.temperature = -0.1; }},
      {"temperature", [&](SamplingParams& p) { p.temperature = nan; }},
      {"temperature", [&](SamplingParams& p) { p.temperature = inf; }},
      {"top_k", [](SamplingParams& p) { p.top_k = -1; }},
      {"top_p", [](SamplingParams& p) { p.top_p = 0.0; }},
      {"top_p", [](SamplingParams& p) { p.top_p = 1.01; }},
      {"top_p", [&](SamplingParams& p) { p.top_p = nan; }},
      {"min_p", [](SamplingParams& p) { p.min_p = -0.01; }},
      {"min_p", [](SamplingParams& p) { p.min_p = 1.5; }},
      {"repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = 0.0; }},
      {"repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = -1.0; }},
      {"repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = 1000.0; }},
      {"repetition_penalty", [&](SamplingParams& p) { p.repetition_penalty = nan; }},
      {"penalty_last_n", [](SamplingParams& p) { p.penalty_last_n = -1; }},
      {"presence_penalty", [](SamplingParams& p) { p.presence_penalty = 2.5; }},
      {"presence_penalty", [&](SamplingParams& p) { p.presence_penalty = nan; }},
      {"frequency_penalty", [](SamplingParams& p) { p.frequency_penalty = -2.01; }},
      {"top_logprobs", [](SamplingParams& p) { p.top_logprobs = -1; }},
      {"top_logprobs", [](SamplingParams& p) { p.top_logprobs = 21; }},
  };
  for (const BadCase& c : cases) {
    SamplingParams p;
    c.set(p);
    const auto error = validate(p);
    ASSERT_TRUE(error.has_value()) << c.field;
    EXPECT_EQ(error->context().field, c.field);
    EXPECT_NE(std::string(error->what()).find(c.field), std::string::npos) << error->what();
  }
}

TEST(SamplingParams, LimitsAreConfigurable) {
  SamplingParams p;
  p.top_logprobs = 5;
  EXPECT_TRUE(validate(p, SamplingLimits{.max_top_logprobs = 4}).has_value());
  EXPECT_FALSE(validate(p, SamplingLimits{.max_top_logprobs = 5}).has_value());
}

TEST(StopStrings, EmptyTooManyAndTooLongAreRejected) {
  EXPECT_FALSE(validate_stop_strings({"a", "\n\n"}).has_value());
  const auto empty = validate_stop_strings({"a", ""});
  ASSERT_TRUE(empty.has_value());
  EXPECT_EQ(empty->context().field, "stop");
  EXPECT_NE(empty->message().find("empty"), std::string::npos);
  EXPECT_TRUE(validate_stop_strings(std::vector<std::string>(17, "x")).has_value());
  EXPECT_TRUE(validate_stop_strings({std::string(257, 'x')}).has_value());
}

}  // namespace
}  // namespace deepmoe
