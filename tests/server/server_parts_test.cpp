// The server's small parts: the API-key check, the engine→client stream, the Prometheus histogram.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "server/api_key.h"
#include "server/generation_stream.h"
#include "server/server_metrics.h"

namespace deepmoe::server {
namespace {

TEST(ApiKey, ExactBytesOnly) {
  EXPECT_TRUE(bearer_key_matches("Bearer sk-abc", "sk-abc"));
  EXPECT_TRUE(bearer_key_matches("bearer sk-abc", "sk-abc"));  // the scheme is case-insensitive
  EXPECT_FALSE(bearer_key_matches("Bearer SK-ABC", "sk-abc"));  // the key is not
  EXPECT_FALSE(bearer_key_matches("Bearer sk-ab", "sk-abc"));
  EXPECT_FALSE(bearer_key_matches("Bearer sk-abcd", "sk-abc"));
  EXPECT_FALSE(bearer_key_matches("Bearer ", "sk-abc"));
  EXPECT_FALSE(bearer_key_matches("Basic sk-abc", "sk-abc"));
  EXPECT_FALSE(bearer_key_matches("", "sk-abc"));
  EXPECT_FALSE(constant_time_equal(std::string_view("a\0", 2), "a"));
  EXPECT_TRUE(constant_time_equal("", ""));
}

TEST(GenerationStream, DeliversTokensTextAndEndsInOrder) {
  GenerationStream stream(2);
  std::thread engine([&] {
    stream.push(1, SampledToken{.token = 5}, "he");
    stream.push(1, SampledToken{.token = 6}, "llo");
    stream.finish(1, ChoiceEnd{.reason = FinishReason::MaxTokens});
    stream.finish(0, ChoiceEnd{.cancelled = true});
  });
  std::string text;
  std::vector<int32_t> tokens;
  int ends = 0;
  while (ends < 2) {
    for (const ChoiceUpdate& u : stream.wait(std::chrono::milliseconds(100))) {
      if (u.choice == 1) {
        text += u.text;
        for (const SampledToken& t : u.tokens) tokens.push_back(t.token);
      }
      if (u.end) {
        ++ends;
        EXPECT_EQ(u.end->cancelled, u.choice == 0);
      }
    }
  }
  engine.join();
  EXPECT_EQ(text, "hello");
  EXPECT_EQ(tokens, (std::vector<int32_t>{5, 6}));
  EXPECT_TRUE(stream.all_finished());
  EXPECT_TRUE(stream.wait(std::chrono::milliseconds(1)).empty());  // each end is delivered once
  EXPECT_FALSE(stream.cancelled());
  stream.cancel();
  EXPECT_TRUE(stream.cancelled());
}

TEST(Histogram, CumulativeBuckets) {
  Histogram h;
  h.observe(0.003);
  h.observe(0.003);
  h.observe(100.0);
  std::string out;
  h.write(out, "x", "help");
  EXPECT_NE(out.find("x_bucket{le=\"0.0025\"} 0\n"), std::string::npos) << out;
  EXPECT_NE(out.find("x_bucket{le=\"0.005\"} 2\n"), std::string::npos) << out;
  EXPECT_NE(out.find("x_bucket{le=\"30\"} 2\n"), std::string::npos) << out;
  EXPECT_NE(out.find("x_bucket{le=\"+Inf\"} 3\n"), std::string::npos) << out;
  EXPECT_NE(out.find("x_count 3\n"), std::string::npos) << out;
  EXPECT_NE(out.find("x_sum 100.006\n"), std::string::npos) << out;
}

}  // namespace
}  // namespace deepmoe::server
