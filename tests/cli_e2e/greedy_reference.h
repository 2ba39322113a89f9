// The reference the CLI e2e tests compare with: the library's forward pass fed one token at a time, argmax by a
// plain loop, on the tiny model the cli_e2e.make_tiny_model fixture writes.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "cli_test_util.h"
#include "runtime/engine.h"
#include "tokenizer/tokenizer.h"

namespace deepmoe::cli_test {

class Reference {
 public:
  Reference() : model_(Engine::open(kModel)), tokenizer_(Tokenizer::load(kModel)) {}

  const Tokenizer& tokenizer() const { return *tokenizer_; }

  std::vector<int32_t> greedy(std::vector<int32_t> prompt, int n) const {
    auto seq = model_->create_sequence();
    std::vector<int32_t> out;
    std::vector<int32_t> feed = std::move(prompt);
    for (int step = 0; step < n; ++step) {
      const Tensor logits = model_->forward({EngineInput::last(seq.get(), feed)});
      const float* l = logits.data<float>();
      int32_t best = 0;
      for (int64_t i = 1; i < logits.numel(); ++i)
        if (l[i] > l[best]) best = static_cast<int32_t>(i);
      out.push_back(best);
      feed = {best};
    }
    return out;
  }

  std::string greedy_text(const std::string& prompt, int n, bool add_special) const {
    return tokenizer_->decode(greedy(tokenizer_->encode(prompt, add_special, true), n));
  }

 private:
  std::unique_ptr<Engine> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

inline const Reference& reference() {
  static const Reference r;
  return r;
}

}  // namespace deepmoe::cli_test
