#include "server/openai_request.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <limits>
#include <set>

namespace deepmoe::server {
namespace {

// Ordered: a response_format schema keeps its property order, which is the order the output follows.
using json = nlohmann::ordered_json;

// Thrown inside the parser only; parse_api_request turns it into its result.
struct Rejection {
  ApiError error;
};

[[noreturn]] void reject(const std::string& param, const std::string& message) {
  throw Rejection{ApiError::invalid_field(param, message)};
}

std::string type_name(const json& j) {
  if (j.is_number_integer()) return "an integer";
  if (j.is_number()) return "a number";
  if (j.is_string()) return "a string";
  if (j.is_boolean()) return "a boolean";
  if (j.is_array()) return "an array";
  if (j.is_object()) return "an object";
  return "null";
}

double get_number(const json& j, const std::string& param) {
  if (!j.is_number()) reject(param, "must be a number, got " + type_name(j));
  const double v = j.get<double>();
  if (!std::isfinite(v)) reject(param, "must be a finite number");
  return v;
}

int64_t get_integer(const json& j, const std::string& param) {
  if (j.is_number_unsigned()) {
    const uint64_t u = j.get<uint64_t>();
    if (u > uint64_t(std::numeric_limits<int64_t>::max()))
      reject(param, "is out of range: " + std::to_string(u) + " does not fit a 64-bit signed integer");
    return int64_t(u);
  }
  if (j.is_number_integer()) return j.get<int64_t>();
  if (j.is_number_float())
    reject(param, "must be an integer, got " + j.dump());
  reject(param, "must be an integer, got " + type_name(j));
}

int64_t get_integer_in(const json& j, const std::string& param, int64_t lo, int64_t hi) {
  const int64_t v = get_integer(j, param);
  if (v < lo || v > hi)
    reject(param, "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + std::to_string(v));
  return v;
}

bool get_bool(const json& j, const std::string& param) {
  if (!j.is_boolean()) reject(param, "must be a boolean, got " + type_name(j));
  return j.get<bool>();
}

std::string get_string(const json& j, const std::string& param) {
  if (!j.is_string()) reject(param, "must be a string, got " + type_name(j));
  return j.get<std::string>();
}

std::vector<std::string> parse_stop(const json& j, const StopLimits& limits) {
  std::vector<std::string> stops;
  if (j.is_string()) {
    stops.push_back(j.get<std::string>());
  } else if (j.is_array()) {
    if (j.size() > limits.max_stop_strings)
      reject("stop", "has " + std::to_string(j.size()) + " strings; at most " +
                         std::to_string(limits.max_stop_strings) + " are allowed");
    for (size_t i = 0; i < j.size(); ++i) stops.push_back(get_string(j[i], "stop[" + std::to_string(i) + "]"));
  } else {
    reject("stop", "must be a string or an array of strings, got " + type_name(j));
  }
  if (auto e = validate_stop_strings(stops, limits)) throw Rejection{ApiError::from_error(*e)};
  return stops;
}

// Message content: a string, or an array of text parts ({"type": "text", "text": ...}) joined in order.
std::optional<std::string> parse_content(const json& j, const std::string& param) {
  if (j.is_null()) return std::nullopt;
  if (j.is_string()) return j.get<std::string>();
  if (!j.is_array()) reject(param, "must be a string, an array of text parts, or null, got " + type_name(j));
  std::string text;
  for (size_t i = 0; i < j.size(); ++i) {
    const std::string p = param + "[" + std::to_string(i) + "]";
    const json& part = j[i];
    if (!part.is_object()) reject(p, "must be an object {\"type\": \"text\", \"text\": ...}, got " + type_name(part));
    const auto type = part.find("type");
    if (type == part.end()) reject(p + ".type", "is missing");
    const std::string t = get_string(*type, p + ".type");
    if (t != "text") reject(p + ".type", "'" + t + "' is not supported; only text parts are");
    const auto body = part.find("text");
    if (body == part.end()) reject(p + ".text", "is missing");
    text += get_string(*body, p + ".text");
  }
  return text;
}

std::vector<ToolCall> parse_tool_calls(const json& j, const std::string& param) {
  if (!j.is_array()) reject(param, "must be an array, got " + type_name(j));
  std::vector<ToolCall> calls;
  for (size_t i = 0; i < j.size(); ++i) {
    const std::string p = param + "[" + std::to_string(i) + "]";
    const json& c = j[i];
    if (!c.is_object()) reject(p, "must be an object, got " + type_name(c));
    ToolCall call;
    if (auto t = c.find("type"); t != c.end()) call.type = get_string(*t, p + ".type");
    const auto fn = c.find("function");
    if (fn == c.end() || !fn->is_object()) reject(p + ".function", "must be an object {\"name\", \"arguments\"}");
    const auto name = fn->find("name");
    if (name == fn->end()) reject(p + ".function.name", "is missing");
    call.name = get_string(*name, p + ".function.name");
    if (auto args = fn->find("arguments"); args != fn->end())
      call.arguments = get_string(*args, p + ".function.arguments");
    calls.push_back(std::move(call));
  }
  return calls;
}

std::vector<ChatMessage> parse_messages(const json& j, const RequestLimits& limits) {
  if (!j.is_array()) reject("messages", "must be an array of messages, got " + type_name(j));
  if (j.empty()) reject("messages", "is empty; at least one message is needed");
  if (j.size() > limits.max_messages)
    reject("messages", "has " + std::to_string(j.size()) + " messages; at most " +
                           std::to_string(limits.max_messages) + " are allowed");
  static const std::set<std::string> roles = {"system", "developer", "user", "assistant", "tool"};
  static const std::set<std::string> keys = {"role", "content", "name", "tool_calls", "tool_call_id", "refusal"};
  std::vector<ChatMessage> messages;
  for (size_t i = 0; i < j.size(); ++i) {
    const std::string p = "messages[" + std::to_string(i) + "]";
    const json& m = j[i];
    if (!m.is_object()) reject(p, "must be an object with 'role' and 'content', got " + type_name(m));
    for (const auto& [key, value] : m.items())
      if (!keys.count(key)) reject(p + "." + key, "is not a recognized message field");
    const auto role = m.find("role");
    if (role == m.end()) reject(p + ".role", "is missing");
    ChatMessage message;
    message.role = get_string(*role, p + ".role");
    if (!roles.count(message.role))
      reject(p + ".role", "'" + message.role + "' is not one of system, developer, user, assistant, tool");
    if (message.role == "developer") message.role = "system";  // OpenAI's newer name for the system role
    const auto content = m.find("content");
    if (content != m.end()) message.content = parse_content(*content, p + ".content");
    if (auto calls = m.find("tool_calls"); calls != m.end() && !calls->is_null())
      message.tool_calls = parse_tool_calls(*calls, p + ".tool_calls");
    if (!message.content && !(message.role == "assistant" && !message.tool_calls.empty()))
      reject(p + ".content", "is missing or null; only an assistant message with tool_calls may omit it");
    messages.push_back(std::move(message));
  }
  return messages;
}

std::vector<int32_t> parse_token_ids(const json& j, const std::string& param, const RequestLimits& limits) {
  if (j.size() > limits.max_prompt_ids)
    reject(param, "has " + std::to_string(j.size()) + " token ids; at most " + std::to_string(limits.max_prompt_ids) +
                      " are allowed");
  std::vector<int32_t> ids;
  ids.reserve(j.size());
  for (size_t i = 0; i < j.size(); ++i)
    ids.push_back(int32_t(get_integer_in(j[i], param + "[" + std::to_string(i) + "]", 0,
                                         std::numeric_limits<int32_t>::max())));
  return ids;
}

std::vector<PromptInput> parse_prompt(const json& j, const RequestLimits& limits) {
  std::vector<PromptInput> prompts;
  if (j.is_string()) {
    prompts.push_back({j.get<std::string>(), {}});
    return prompts;
  }
  if (!j.is_array())
    reject("prompt", "must be a string, an array of strings, an array of token ids or an array of such arrays, got " +
                         type_name(j));
  if (j.empty()) reject("prompt", "is an empty array");
  if (j[0].is_number()) {
    prompts.push_back({std::nullopt, parse_token_ids(j, "prompt", limits)});
    return prompts;
  }
  if (int64_t(j.size()) > limits.max_choices)
    reject("prompt", "has " + std::to_string(j.size()) + " prompts; at most " + std::to_string(limits.max_choices) +
                         " are allowed");
  for (size_t i = 0; i < j.size(); ++i) {
    const std::string p = "prompt[" + std::to_string(i) + "]";
    if (j[i].is_string()) {
      prompts.push_back({j[i].get<std::string>(), {}});
    } else if (j[i].is_array()) {
      if (j[i].empty()) reject(p, "is an empty list of token ids");
      prompts.push_back({std::nullopt, parse_token_ids(j[i], p, limits)});
    } else {
      reject(p, "must be a string or an array of token ids, got " + type_name(j[i]));
    }
  }
  return prompts;
}

// {"type": "text"} | {"type": "json_object"} | {"type": "json_schema", "json_schema": {"name", "schema",
// "strict", "description"}}, as OpenAI's API spells them.
ResponseFormat parse_response_format(const json& j) {
  if (!j.is_object()) reject("response_format", "must be an object {\"type\": ...}, got " + type_name(j));
  ResponseFormat f;
  const json* spec = nullptr;
  std::string type;
  for (const auto& [key, value] : j.items()) {
    if (key == "type") type = get_string(value, "response_format.type");
    else if (key == "json_schema") spec = &value;
    else reject("response_format." + key, "is not a recognized field");
  }
  if (type.empty()) reject("response_format.type", "is missing");
  if (type == "text") f.type = ResponseFormat::Type::Text;
  else if (type == "json_object") f.type = ResponseFormat::Type::JsonObject;
  else if (type == "json_schema") f.type = ResponseFormat::Type::JsonSchema;
  else reject("response_format.type", "'" + type + "' is not one of text, json_object, json_schema");
  if (f.type != ResponseFormat::Type::JsonSchema) {
    if (spec) reject("response_format.json_schema", "is only allowed with type json_schema");
    return f;
  }
  if (!spec || spec->is_null()) reject("response_format.json_schema", "is missing");
  if (!spec->is_object())
    reject("response_format.json_schema", "must be an object {\"name\", \"schema\", \"strict\"}, got " + type_name(*spec));
  bool has_schema = false;
  for (const auto& [key, value] : spec->items()) {
    const std::string p = "response_format.json_schema." + key;
    if (key == "name") {
      f.name = get_string(value, p);
    } else if (key == "description") {
      get_string(value, p);
    } else if (key == "strict") {
      if (!value.is_null()) f.strict = get_bool(value, p);
    } else if (key == "schema") {
      if (!value.is_object() && !value.is_boolean()) reject(p, "must be a JSON Schema (an object), got " + type_name(value));
      f.schema = value.dump();
      has_schema = true;
    } else {
      reject(p, "is not a recognized field");
    }
  }
  if (!has_schema) reject("response_format.json_schema.schema", "is missing");
  return f;
}

ApiRequest parse_object(ApiEndpoint endpoint, const json& body, const RequestLimits& limits) {
  const bool chat = endpoint == ApiEndpoint::ChatCompletions;
  ApiRequest r;
  r.endpoint = endpoint;
  std::optional<int64_t> top_logprobs;
  bool logprobs = false;
  const json* stream_options = nullptr;
  for (const auto& [key, value] : body.items()) {
    // null is how many clients spell "not given".
    if (value.is_null()) continue;
    if (key == "model") {
      r.model = get_string(value, key);
    } else if (chat && key == "messages") {
      r.messages = parse_messages(value, limits);
    } else if (!chat && key == "prompt") {
      r.prompts = parse_prompt(value, limits);
    } else if (key == "max_tokens" || (chat && key == "max_completion_tokens")) {
      const int64_t v = get_integer(value, key);
      if (v < 1) reject(key, "must be >= 1, got " + std::to_string(v));
      // max_completion_tokens is the newer name; it wins when both are given.
      if (key == "max_completion_tokens" || !body.contains("max_completion_tokens") ||
          body["max_completion_tokens"].is_null())
        r.max_tokens = v;
    } else if (key == "temperature") {
      r.sampling.temperature = get_number(value, key);
    } else if (key == "top_p") {
      r.sampling.top_p = get_number(value, key);
    } else if (key == "top_k") {
      const int64_t k = get_integer(value, key);
      r.sampling.top_k = k == -1 ? 0 : k;  // -1 is vLLM's "off"
    } else if (key == "min_p") {
      r.sampling.min_p = get_number(value, key);
    } else if (key == "presence_penalty") {
      r.sampling.presence_penalty = get_number(value, key);
    } else if (key == "frequency_penalty") {
      r.sampling.frequency_penalty = get_number(value, key);
    } else if (key == "repetition_penalty") {
      r.sampling.repetition_penalty = get_number(value, key);
    } else if (key == "seed") {
      r.sampling.seed = uint64_t(get_integer(value, key));
      r.seed_given = true;
    } else if (key == "stop") {
      r.stop = parse_stop(value, limits.stop);
    } else if (chat && key == "logprobs") {
      logprobs = get_bool(value, key);
    } else if (chat && key == "top_logprobs") {
      top_logprobs = get_integer_in(value, key, 0, limits.sampling.max_top_logprobs);
    } else if (!chat && key == "logprobs") {
      top_logprobs = get_integer_in(value, key, 0, limits.max_completion_logprobs);
      logprobs = true;
    } else if (key == "n") {
      r.n = get_integer_in(value, key, 1, limits.max_n);
    } else if (key == "stream") {
      r.stream = get_bool(value, key);
    } else if (key == "stream_options") {
      if (!value.is_object()) reject(key, "must be an object, got " + type_name(value));
      stream_options = &value;
    } else if (!chat && key == "echo") {
      r.echo = get_bool(value, key);
    } else if (key == "ignore_eos") {
      r.ignore_eos = get_bool(value, key);
    } else if (key == "token_healing") {
      r.token_healing = get_bool(value, key);
    } else if (key == "response_format") {
      r.response_format = parse_response_format(value);
    } else if (key == "user") {
      get_string(value, key);  // accepted and ignored
    } else {
      reject(key, std::string("is not a recognized field of ") +
                      (chat ? "/v1/chat/completions" : "/v1/completions"));
    }
  }
  if (!body.contains("model") || body["model"].is_null()) reject("model", "is missing");
  if (chat && r.messages.empty()) reject("messages", "is missing");
  if (!chat && r.prompts.empty()) reject("prompt", "is missing");
  if (stream_options) {
    if (!r.stream) reject("stream_options", "is only allowed when 'stream' is true");
    for (const auto& [key, value] : stream_options->items()) {
      if (key == "include_usage") {
        if (!value.is_null()) r.include_usage = get_bool(value, "stream_options.include_usage");
      } else {
        reject("stream_options." + key, "is not a recognized field");
      }
    }
  }
  if (chat && top_logprobs && *top_logprobs > 0 && !logprobs)
    reject("top_logprobs", "needs 'logprobs': true");
  r.sampling.logprobs = logprobs;
  r.sampling.top_logprobs = top_logprobs.value_or(0);
  const int64_t choices = int64_t(chat ? 1 : r.prompts.size()) * r.n;
  if (choices > limits.max_choices)
    reject("n", "asks for " + std::to_string(choices) + " choices (prompts × n); at most " +
                    std::to_string(limits.max_choices) + " are allowed");
  if (!chat && r.echo && r.sampling.logprobs)
    reject("echo", "with 'logprobs' is not supported (prompt log-probabilities are not computed)");
  if (auto e = validate(r.sampling, limits.sampling)) throw Rejection{ApiError::from_error(*e)};
  return r;
}

}  // namespace

int json_nesting_depth(std::string_view text) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

ParsedRequest parse_api_request(ApiEndpoint endpoint, std::string_view body, const RequestLimits& limits) {
  try {
    const int depth = json_nesting_depth(body);
    if (depth > limits.max_json_depth) {
      ApiError e = ApiError::invalid_field("", "request body nests arrays/objects " + std::to_string(depth) +
                                                   " deep; at most " + std::to_string(limits.max_json_depth) +
                                                   " levels are allowed");
      e.code = "invalid_json";
      return e;
    }
    json parsed;
    try {
      parsed = json::parse(body);
    } catch (const json::exception& ex) {
      ApiError e = ApiError::invalid_field("", std::string("request body is not valid JSON: ") + ex.what());
      e.code = "invalid_json";
      return e;
    }
    if (!parsed.is_object()) {
      ApiError e = ApiError::invalid_field("", "request body must be a JSON object, got " + type_name(parsed));
      e.code = "invalid_json";
      return e;
    }
    return parse_object(endpoint, parsed, limits);
  } catch (const Rejection& r) {
    return r.error;
  } catch (const std::exception& ex) {
    // Anything else a hostile body could provoke (e.g. allocation failure) is still the client's 400.
    return ApiError::invalid_field("", std::string("request could not be read: ") + ex.what());
  }
}

}  // namespace deepmoe::server
