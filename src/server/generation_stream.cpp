#include "server/generation_stream.h"

#include "core/error.h"

namespace deepmoe::server {

GenerationStream::GenerationStream(size_t choices) : choices_(choices) {}

void GenerationStream::push(size_t choice, const SampledToken& token, std::string_view text) {
  {
    std::lock_guard lock(mutex_);
    DEEPMOE_CHECK(choice < choices_.size() && !choices_[choice].end, "push to a finished or unknown choice");
    choices_[choice].tokens.push_back(token);
    choices_[choice].text.append(text);
  }
  changed_.notify_all();
}

void GenerationStream::finish(size_t choice, ChoiceEnd end) {
  {
    std::lock_guard lock(mutex_);
    DEEPMOE_CHECK(choice < choices_.size() && !choices_[choice].end, "choice finished twice");
    choices_[choice].end = std::move(end);
    ++finished_;
  }
  changed_.notify_all();
}

std::vector<ChoiceUpdate> GenerationStream::wait(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  auto has_news = [&] {
    for (const Pending& p : choices_)
      if (!p.tokens.empty() || !p.text.empty() || (p.end && !p.delivered_end)) return true;
    return false;
  };
  changed_.wait_for(lock, timeout, has_news);
  std::vector<ChoiceUpdate> updates;
  for (size_t i = 0; i < choices_.size(); ++i) {
    Pending& p = choices_[i];
    const bool end_news = p.end && !p.delivered_end;
    if (p.tokens.empty() && p.text.empty() && !end_news) continue;
    ChoiceUpdate u;
    u.choice = i;
    u.tokens.swap(p.tokens);
    u.text.swap(p.text);
    if (end_news) {
      u.end = p.end;
      p.delivered_end = true;
    }
    updates.push_back(std::move(u));
  }
  return updates;
}

bool GenerationStream::all_finished() const {
  std::lock_guard lock(mutex_);
  return finished_ == choices_.size();
}

void GenerationStream::cancel() { cancelled_.store(true, std::memory_order_relaxed); }

}  // namespace deepmoe::server
