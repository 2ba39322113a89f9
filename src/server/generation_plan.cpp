#include "server/generation_plan.h"

#include <algorithm>
#include <memory>
#include <random>

#include "grammar/json_schema_compiler.h"

namespace deepmoe::server {
namespace {

// OpenAI's default for /v1/completions.
constexpr int64_t kDefaultCompletionTokens = 16;

// The grammar of response_format (null for free text), compiled once for every choice of the request. A schema
// the compiler cannot enforce is the client's 400 naming the keyword and its path inside the schema.
std::variant<std::shared_ptr<const grammar::Grammar>, ApiError> response_grammar(const ResponseFormat& format) {
  if (format.type == ResponseFormat::Type::Text) return std::shared_ptr<const grammar::Grammar>();
  grammar::JsonSchemaOptions options;
  options.additional_properties_default = !format.strict;
  const bool object = format.type == ResponseFormat::Type::JsonObject;
  try {
    auto g = std::make_shared<grammar::Grammar>(
        grammar::compile_json_schema(object ? std::string(R"({"type":"object"})") : format.schema, options));
    if (grammar::matches_nothing(*g)) {
      ApiError err = ApiError::invalid_field("response_format.json_schema.schema",
                                             "accepts no value at all (false, an empty enum, or contradicting "
                                             "branches): nothing could be generated");
      err.code = "unsatisfiable_schema";
      return err;
    }
    return std::shared_ptr<const grammar::Grammar>(std::move(g));
  } catch (const std::exception& e) {
    const std::string message = dynamic_cast<const Error*>(&e) ? static_cast<const Error&>(e).message() : e.what();
    ApiError err = ApiError::invalid_field("response_format.json_schema.schema", "cannot be enforced: " + message);
    err.code = "unsupported_schema";
    return err;
  }
}

}  // namespace

std::variant<GenerationPlan, ApiError> plan_generation(const ApiRequest& request, const ServedModel& model) {
  GenerationPlan plan;
  plan.n = request.n;
  auto grammar = response_grammar(request.response_format);
  if (auto* e = std::get_if<ApiError>(&grammar)) return *e;
  const Tokenizer& tokenizer = *model.tokenizer;
  try {
    if (request.endpoint == ApiEndpoint::ChatCompletions) {
      if (!model.chat_template) {
        ApiError e = ApiError::invalid_field("messages", "cannot be rendered: the model has no chat template; use /v1/completions");
        e.code = "no_chat_template";
        return e;
      }
      PlannedPrompt p;
      // The template writes BOS itself, so the tokenizer adds no special tokens of its own.
      p.text = model.chat_template->render(request.messages, /*add_generation_prompt=*/true);
      p.tokens = tokenizer.encode(p.text, /*add_special=*/false, /*parse_special=*/true);
      plan.prompts.push_back(std::move(p));
    } else {
      for (const PromptInput& input : request.prompts) {
        PlannedPrompt p;
        if (input.text) {
          p.text = *input.text;
          // Special-token spellings in client text stay plain text (no injected BOS/EOS from a prompt string).
          p.tokens = tokenizer.encode(p.text, /*add_special=*/true, /*parse_special=*/false);
        } else {
          for (size_t i = 0; i < input.tokens.size(); ++i)
            if (input.tokens[i] >= model.vocab_size)
              return ApiError::invalid_field("prompt", "token " + std::to_string(input.tokens[i]) + " at index " +
                                                           std::to_string(i) + " is outside the vocabulary [0, " +
                                                           std::to_string(model.vocab_size) + ")");
          p.tokens = input.tokens;
          p.text = tokenizer.decode(p.tokens);
        }
        plan.prompts.push_back(std::move(p));
      }
    }
  } catch (const Error& e) {
    return ApiError::from_error(e.context().field.empty()
                                    ? e.with_field(request.endpoint == ApiEndpoint::ChatCompletions ? "messages" : "prompt")
                                    : e);
  }
  for (const PlannedPrompt& p : plan.prompts) {
    const int64_t room = model.context_length - int64_t(p.tokens.size());
    for (int64_t i = 0; i < request.n; ++i) {
      GenerationRequest g;
      g.prompt = p.tokens;
      g.sampling = request.sampling;
      // n choices of one seeded request differ from each other and repeat run after run.
      if (request.seed_given) g.sampling.seed = request.sampling.seed + uint64_t(i);
      else g.sampling.seed = (uint64_t(std::random_device{}()) << 32) ^ std::random_device{}();
      if (request.max_tokens) g.max_tokens = *request.max_tokens;
      else if (request.endpoint == ApiEndpoint::Completions) g.max_tokens = std::min(kDefaultCompletionTokens, std::max<int64_t>(room, 1));
      else g.max_tokens = std::max<int64_t>(room, 1);
      g.stop = request.stop;
      g.ignore_eos = request.ignore_eos;
      g.grammar = std::get<0>(grammar);
      g.token_healing = request.token_healing;
      if (auto e = validate_request(g, model.vocab_size, model.context_length)) {
        ApiError err = ApiError::from_error(*e);
        if (request.endpoint == ApiEndpoint::ChatCompletions && err.param == "prompt") {
          err = ApiError::invalid_field("messages", e->message());
        }
        if (e->message().find("context length") != std::string::npos) err.code = "context_length_exceeded";
        return err;
      }
      plan.choices.push_back(std::move(g));
    }
  }
  return plan;
}

}  // namespace deepmoe::server
