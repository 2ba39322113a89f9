#include "server/openai_response.h"

#include <nlohmann/json.hpp>

namespace deepmoe::server {
namespace {

using ojson = nlohmann::ordered_json;

std::string dump(const ojson& j) {
  // Token texts can hold part of a UTF-8 character; such bytes become U+FFFD rather than failing.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

OpenAiResponder::OpenAiResponder(const ApiRequest& request, const GenerationPlan& plan, const ServedModel& model,
                                 std::string id, int64_t created_unix)
    : request_(request),
      plan_(plan),
      model_(model),
      id_(std::move(id)),
      created_(created_unix),
      chat_(request.endpoint == ApiEndpoint::ChatCompletions),
      choices_(plan.choices.size()) {}

std::string OpenAiResponder::sse(const std::string& json) { return "data: " + json + "\n\n"; }

const char* OpenAiResponder::finish_reason(const ChoiceEnd& end) const {
  switch (end.reason) {
    case FinishReason::Eos:
    case FinishReason::StopString: return "stop";
    case FinishReason::MaxTokens:
    case FinishReason::ContextFull: return "length";
    case FinishReason::None: break;
  }
  return nullptr;  // cancelled or failed
}

std::string OpenAiResponder::logprobs_json(const std::vector<SampledToken>& tokens, size_t text_offset) const {
  const Tokenizer& tok = *model_.tokenizer;
  auto token_text = [&](int32_t id) { return tok.decode(std::vector<int32_t>{id}); };
  auto token_bytes = [&](int32_t id) {
    const std::string& b = tok.token_bytes(id);
    return std::vector<uint8_t>(b.begin(), b.end());
  };
  ojson j;
  if (chat_) {
    ojson content = ojson::array();
    for (const SampledToken& t : tokens) {
      ojson e;
      e["token"] = token_text(t.token);
      e["logprob"] = t.logprob;
      e["bytes"] = token_bytes(t.token);
      ojson top = ojson::array();
      for (const TokenLogprob& alt : t.top) {
        ojson a;
        a["token"] = token_text(alt.token);
        a["logprob"] = alt.logprob;
        a["bytes"] = token_bytes(alt.token);
        top.push_back(std::move(a));
      }
      e["top_logprobs"] = std::move(top);
      content.push_back(std::move(e));
    }
    j["content"] = std::move(content);
  } else {
    ojson texts = ojson::array(), lps = ojson::array(), tops = ojson::array(), offsets = ojson::array();
    for (const SampledToken& t : tokens) {
      const std::string text = token_text(t.token);
      texts.push_back(text);
      lps.push_back(t.logprob);
      ojson top = ojson::object();
      for (const TokenLogprob& alt : t.top) top[token_text(alt.token)] = alt.logprob;
      tops.push_back(std::move(top));
      offsets.push_back(text_offset);
      text_offset += text.size();
    }
    j["tokens"] = std::move(texts);
    j["token_logprobs"] = std::move(lps);
    j["top_logprobs"] = std::move(tops);
    j["text_offset"] = std::move(offsets);
  }
  return dump(j);
}

std::string OpenAiResponder::chunk_json(size_t index, const std::string& text, const std::vector<SampledToken>& tokens,
                                        const char* finish, bool role) const {
  ojson c;
  c["index"] = index;
  if (chat_) {
    ojson delta = ojson::object();
    if (role) delta["role"] = "assistant";
    if (role || !text.empty()) delta["content"] = text;
    c["delta"] = std::move(delta);
  } else {
    c["text"] = text;
  }
  c["logprobs"] = request_.sampling.logprobs && !tokens.empty()
                      ? ojson::parse(logprobs_json(tokens, choices_[index].text.size() - text.size()))
                      : ojson(nullptr);
  c["finish_reason"] = finish ? ojson(finish) : ojson(nullptr);
  ojson j;
  j["id"] = id_;
  j["object"] = chat_ ? "chat.completion.chunk" : "text_completion";
  j["created"] = created_;
  j["model"] = model_.id;
  j["choices"] = ojson::array({std::move(c)});
  if (request_.include_usage) j["usage"] = nullptr;
  return dump(j);
}

std::string OpenAiResponder::add(const ChoiceUpdate& u) {
  Choice& c = choices_[u.choice];
  c.text += u.text;
  c.tokens.insert(c.tokens.end(), u.tokens.begin(), u.tokens.end());
  if (u.end) {
    c.ended = true;
    c.end = *u.end;
    if (!u.end->error.empty() && engine_error_.empty()) engine_error_ = u.end->error;
  }
  if (!request_.stream) return {};
  std::string out;
  if (!u.text.empty() || (!u.tokens.empty() && request_.sampling.logprobs))
    out += sse(chunk_json(u.choice, u.text, u.tokens, nullptr, false));
  if (u.end && u.end->error.empty() && !u.end->cancelled)
    out += sse(chunk_json(u.choice, "", {}, finish_reason(*u.end), false));
  return out;
}

std::string OpenAiResponder::stream_start() const {
  std::string out;
  for (size_t i = 0; i < choices_.size(); ++i) {
    if (chat_) {
      out += sse(chunk_json(i, "", {}, nullptr, true));
    } else if (request_.echo) {
      const std::string& prompt = plan_.prompts[i / size_t(plan_.n)].text;
      ojson c;
      c["index"] = i;
      c["text"] = prompt;
      c["logprobs"] = nullptr;
      c["finish_reason"] = nullptr;
      ojson j;
      j["id"] = id_;
      j["object"] = "text_completion";
      j["created"] = created_;
      j["model"] = model_.id;
      j["choices"] = ojson::array({std::move(c)});
      out += sse(dump(j));
    }
  }
  return out;
}

std::string OpenAiResponder::stream_end() const {
  std::string out;
  if (request_.include_usage) {
    ojson j;
    j["id"] = id_;
    j["object"] = chat_ ? "chat.completion.chunk" : "text_completion";
    j["created"] = created_;
    j["model"] = model_.id;
    j["choices"] = ojson::array();
    j["usage"] = ojson::parse(usage_json());
    out += sse(dump(j));
  }
  return out + "data: [DONE]\n\n";
}

int64_t OpenAiResponder::prompt_tokens() const {
  int64_t total = 0;
  for (const PlannedPrompt& p : plan_.prompts) total += int64_t(p.tokens.size());
  return total;
}

int64_t OpenAiResponder::cached_prompt_tokens() const {
  // Each prompt counted once, as prompt_tokens is: the cache hit of its first choice.
  int64_t total = 0;
  for (size_t i = 0; i < choices_.size(); i += size_t(plan_.n)) total += choices_[i].end.stats.cached_prompt_tokens;
  return total;
}

int64_t OpenAiResponder::completion_tokens() const {
  int64_t total = 0;
  for (const Choice& c : choices_) total += int64_t(c.tokens.size());
  return total;
}

bool OpenAiResponder::any_cancelled() const {
  for (const Choice& c : choices_)
    if (c.ended && c.end.cancelled) return true;
  return false;
}

std::string OpenAiResponder::usage_json() const {
  ojson u;
  u["prompt_tokens"] = prompt_tokens();
  u["completion_tokens"] = completion_tokens();
  u["total_tokens"] = prompt_tokens() + completion_tokens();
  u["prompt_tokens_details"] = {{"cached_tokens", cached_prompt_tokens()}};
  return dump(u);
}

std::string OpenAiResponder::body() const {
  ojson list = ojson::array();
  for (size_t i = 0; i < choices_.size(); ++i) {
    const Choice& c = choices_[i];
    ojson choice;
    choice["index"] = i;
    const char* finish = finish_reason(c.end);
    if (chat_) {
      choice["message"] = {{"role", "assistant"}, {"content", c.text}};
    } else {
      const std::string prefix = request_.echo ? plan_.prompts[i / size_t(plan_.n)].text : std::string();
      choice["text"] = prefix + c.text;
    }
    choice["logprobs"] = request_.sampling.logprobs ? ojson::parse(logprobs_json(c.tokens, 0)) : ojson(nullptr);
    choice["finish_reason"] = finish ? ojson(finish) : ojson(nullptr);
    list.push_back(std::move(choice));
  }
  ojson j;
  j["id"] = id_;
  j["object"] = chat_ ? "chat.completion" : "text_completion";
  j["created"] = created_;
  j["model"] = model_.id;
  j["choices"] = std::move(list);
  j["usage"] = ojson::parse(usage_json());
  return dump(j);
}

}  // namespace deepmoe::server
