#include "server/openai_server.h"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <random>

#include "core/error.h"
#include "server/api_key.h"
#include "server/chat_page.h"
#include "server/openai_response.h"
#include "server/server_metrics.h"

namespace deepmoe::server {
namespace {

using Clock = std::chrono::steady_clock;
using ojson = nlohmann::ordered_json;

// How often an idle response proves the client is still there. A write to a closed connection fails (at the
// latest on the second one), which is how a vanished client is noticed while its request waits or computes.
constexpr auto kHeartbeatInterval = std::chrono::milliseconds(1000);
constexpr auto kPollInterval = std::chrono::milliseconds(100);

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

std::string random_id(const char* prefix) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[40];
  std::snprintf(buf, sizeof buf, "%s%016llx%08llx", prefix, (unsigned long long)rng(),
                (unsigned long long)(rng() & 0xffffffffu));
  return buf;
}

// What the access-log line of the request a connection thread is serving says. httplib calls the logger on the
// same thread after the response is written (streamed bodies included), and a connection thread serves one
// request at a time, so a thread-local record needs no locking.
struct AccessRecord {
  bool started = false;
  Clock::time_point start;
  std::string route = "other";  // metrics label: the matched route, never the raw path
  int64_t prompt_tokens = -1, completion_tokens = -1, cached_tokens = -1;
  std::string prompt;           // only with --log-prompts
  std::string note;             // e.g. "cancelled"
};
thread_local AccessRecord t_access;

ApiError error_of(int status, std::string type, std::string code, std::string message) {
  ApiError e;
  e.status = status;
  e.type = std::move(type);
  e.code = std::move(code);
  e.message = std::move(message);
  return e;
}

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(e.to_json(), "application/json");
}

// One admitted generation request, shared by the content provider and its releaser.
struct ActiveRequest {
  ApiRequest request;
  GenerationPlan plan;
  std::shared_ptr<GenerationStream> stream;
  std::unique_ptr<OpenAiResponder> responder;
  Clock::time_point arrival;
  std::vector<Clock::time_point> first_token;  // per choice; arrival until one comes
  std::vector<bool> has_token;
  size_t ended = 0;
  bool finished = false;  // the provider wrote the whole answer
};

}  // namespace

struct OpenAiServer::Impl {
  enum class State { Loading, Ready, Draining };

  ServerOptions options;
  httplib::Server http;
  std::atomic<State> state{State::Loading};
  ServedModel model;
  std::atomic<GenerationBackend*> backend{nullptr};
  ServerMetrics metrics;
  std::mutex log_mutex;

  explicit Impl(ServerOptions o) : options(std::move(o)) {
    if (!options.log) options.log = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
    const int threads = std::max(options.http_threads, 4);
    http.new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
    http.set_payload_max_length(options.max_body_bytes);
    // Streamed tokens are small writes; without TCP_NODELAY, Nagle holds each one until the previous is acked.
    http.set_tcp_nodelay(true);
    http.set_pre_routing_handler([](const httplib::Request&, httplib::Response&) {
      t_access = AccessRecord{};
      t_access.started = true;
      t_access.start = Clock::now();
      return httplib::Server::HandlerResponse::Unhandled;
    });
    http.set_error_handler(httplib::Server::HandlerWithResponse(
        [this](const httplib::Request& req, httplib::Response& res) {
          if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
          send_error(res, error_for_status(res.status, req));
          return httplib::Server::HandlerResponse::Handled;
        }));
    http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "unknown error";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      send_error(res, error_of(500, "server_error", "internal_error", "internal server error: " + what));
    });
    http.set_logger([this](const httplib::Request& req, const httplib::Response& res) { log_access(req, res); });

    http.Get("/", [](const httplib::Request&, httplib::Response& res) {
      t_access.route = "/";
      const std::string_view page = chat_page_html();
      res.set_content(page.data(), page.size(), "text/html; charset=utf-8");
    });
    http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      t_access.route = "/health";
      switch (state.load()) {
        case State::Ready: res.set_content("{\"status\":\"ok\"}", "application/json"); return;
        case State::Loading:
          send_error(res, error_of(503, "service_unavailable", "loading", "the model is still loading"));
          return;
        case State::Draining:
          send_error(res, error_of(503, "service_unavailable", "draining", "the server is shutting down"));
          return;
      }
    });
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      t_access.route = "/metrics";
      GenerationBackend* engine = backend.load();
      res.set_content(metrics.prometheus_text(engine ? engine->load() : BackendLoad{},
                                              engine ? engine->metrics_text() : std::string()),
                      "text/plain; version=0.0.4");
    });
    http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      t_access.route = "/v1/models";
      if (!check_ready(res)) return;
      ojson list;
      list["object"] = "list";
      list["data"] = ojson::array({model_json()});
      res.set_content(list.dump(), "application/json");
    });
    http.Get(R"(/v1/models/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
      t_access.route = "/v1/models/{id}";
      if (!check_ready(res)) return;
      if (req.matches[1] != model.id) {
        send_error(res, error_of(404, "not_found_error", "model_not_found",
                                 "model '" + std::string(req.matches[1]) + "' does not exist; this server serves '" +
                                     model.id + "'"));
        return;
      }
      res.set_content(model_json().dump(), "application/json");
    });
    http.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
      t_access.route = "/v1/chat/completions";
      handle_generation(ApiEndpoint::ChatCompletions, req, res);
    });
    http.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
      t_access.route = "/v1/completions";
      handle_generation(ApiEndpoint::Completions, req, res);
    });
  }

  ApiError error_for_status(int status, const httplib::Request& req) {
    switch (status) {
      case 404:
        return error_of(404, "not_found_error", "unknown_route",
                        "no route " + req.method + " " + req.path + " (see /v1/models, /v1/chat/completions, "
                        "/v1/completions, /health, /metrics)");
      case 413:
        return error_of(413, "invalid_request_error", "request_too_large",
                        "request body exceeds the server's limit of " + std::to_string(options.max_body_bytes) +
                            " bytes (--max-body-mb)");
      case 400:
        return error_of(400, "invalid_request_error", "bad_http_request", "malformed HTTP request");
      default:
        return error_of(status, status >= 500 ? "server_error" : "invalid_request_error", "http_" + std::to_string(status),
                        "HTTP error " + std::to_string(status));
    }
  }

  ojson model_json() const {
    ojson m;
    m["id"] = model.id;
    m["object"] = "model";
    m["created"] = 0;
    m["owned_by"] = "deepmoe";
    m["max_model_len"] = model.context_length;
    return m;
  }

  bool check_ready(httplib::Response& res) {
    const State s = state.load();
    if (s == State::Ready) return true;
    send_error(res, s == State::Loading
                        ? error_of(503, "service_unavailable", "loading", "the model is still loading; retry shortly")
                        : error_of(503, "service_unavailable", "draining", "the server is shutting down"));
    return false;
  }

  bool authorized(const httplib::Request& req, httplib::Response& res) {
    if (options.api_key.empty()) return true;
    const std::string header = req.get_header_value("Authorization");
    if (bearer_key_matches(header, options.api_key)) return true;
    send_error(res, error_of(401, "authentication_error", "invalid_api_key",
                             header.empty() ? "missing API key: send 'Authorization: Bearer <key>'"
                                            : "invalid API key"));
    return false;
  }

  void handle_generation(ApiEndpoint endpoint, const httplib::Request& req, httplib::Response& res) {
    const Clock::time_point arrival = Clock::now();
    if (!check_ready(res) || !authorized(req, res)) return;
    ParsedRequest parsed = parse_api_request(endpoint, req.body, options.limits);
    if (auto* e = std::get_if<ApiError>(&parsed)) return send_error(res, *e);
    auto active = std::make_shared<ActiveRequest>();
    active->request = std::move(std::get<ApiRequest>(parsed));
    if (active->request.model != model.id) {
      ApiError e = error_of(404, "not_found_error", "model_not_found",
                            "model '" + active->request.model + "' does not exist; this server serves '" + model.id + "'");
      e.param = "model";
      return send_error(res, e);
    }
    auto planned = plan_generation(active->request, model);
    if (auto* e = std::get_if<ApiError>(&planned)) return send_error(res, *e);
    active->plan = std::move(std::get<GenerationPlan>(planned));
    const size_t choices = active->plan.choices.size();
    active->stream = std::make_shared<GenerationStream>(choices);
    active->arrival = arrival;
    active->first_token.assign(choices, arrival);
    active->has_token.assign(choices, false);
    const bool chat = endpoint == ApiEndpoint::ChatCompletions;
    active->responder = std::make_unique<OpenAiResponder>(
        active->request, active->plan, model, random_id(chat ? "chatcmpl-" : "cmpl-"),
        int64_t(std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count()));
    t_access.prompt_tokens = active->responder->prompt_tokens();
    if (options.log_prompts)
      t_access.prompt = nlohmann::json(active->plan.prompts.front().text).dump(-1, ' ', false,
                                                                                nlohmann::json::error_handler_t::replace);
    if (state.load() != State::Ready) {
      check_ready(res);
      return;
    }
    switch (backend.load()->submit(active->plan.choices, active->stream)) {
      case Admission::Accepted: break;
      case Admission::QueueFull:
        return send_error(res, error_of(429, "rate_limit_error", "queue_full",
                                        "the server's queue is full (--max-queue); retry later"));
      case Admission::Stopped:
        return send_error(res, error_of(503, "service_unavailable", "draining", "the server is shutting down"));
    }
    const char* type = active->request.stream ? "text/event-stream" : "application/json";
    if (active->request.stream) res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        type, [this, active](size_t, httplib::DataSink& sink) { return pump(*active, sink); },
        [this, active](bool) {
          // The answer was not written to the end (client gone, write timeout): stop generating for it.
          if (!active->finished) {
            backend.load()->cancel(active->stream);
            metrics.record_cancelled();
            t_access.note = "cancelled";
          }
        });
  }

  // Writes the answer as the engine produces it; returns false (closing the connection) when a write fails.
  bool pump(ActiveRequest& a, httplib::DataSink& sink) {
    OpenAiResponder& responder = *a.responder;
    const bool streaming = a.request.stream;
    auto write = [&](const std::string& data) { return data.empty() || sink.write(data.data(), data.size()); };
    if (streaming && !write(responder.stream_start())) return false;
    Clock::time_point last_write = Clock::now();
    const size_t choices = a.plan.choices.size();
    while (a.ended < choices) {
      for (const ChoiceUpdate& u : a.stream->wait(kPollInterval)) {
        if (!u.tokens.empty() && !a.has_token[u.choice]) {
          a.has_token[u.choice] = true;
          a.first_token[u.choice] = Clock::now();
        }
        const std::string events = responder.add(u);
        if (!events.empty()) {
          if (!write(events)) return false;
          last_write = Clock::now();
        }
        if (u.end) {
          ++a.ended;
          if (!u.end->cancelled && u.end->error.empty())
            metrics.record_choice(int64_t(a.plan.choices[u.choice].prompt.size()), u.end->stats.cached_prompt_tokens,
                                  u.end->stats.generated_tokens,
                                  seconds_between(a.arrival, a.first_token[u.choice]), u.end->stats.decode_seconds);
        }
      }
      if (a.ended < choices && Clock::now() - last_write >= kHeartbeatInterval) {
        // SSE comment line / JSON whitespace: ignored by clients, fails once the client is gone.
        if (!write(streaming ? ": keep-alive\n\n" : " ")) return false;
        last_write = Clock::now();
      }
    }
    std::string tail;
    if (!responder.engine_error().empty() || responder.any_cancelled()) {
      const ApiError e = responder.engine_error().empty()
                             ? error_of(503, "service_unavailable", "draining",
                                        "the server shut down before the request finished")
                             : error_of(500, "server_error", "engine_error", responder.engine_error());
      tail = streaming ? OpenAiResponder::sse(e.to_json()) + "data: [DONE]\n\n" : e.to_json();
      t_access.note = responder.engine_error().empty() ? "cancelled" : "engine_error";
    } else {
      tail = streaming ? responder.stream_end() : responder.body();
    }
    if (!write(tail)) return false;
    a.finished = true;
    t_access.completion_tokens = responder.completion_tokens();
    t_access.cached_tokens = responder.cached_prompt_tokens();
    metrics.record_request_latency(seconds_between(a.arrival, Clock::now()));
    sink.done();
    return true;
  }

  void log_access(const httplib::Request& req, const httplib::Response& res) {
    metrics.record_request(t_access.route, res.status);
    const double ms = t_access.started ? seconds_between(t_access.start, Clock::now()) * 1e3 : 0.0;
    char head[160];
    std::snprintf(head, sizeof head, " %d %.1fms", res.status, ms);
    // The path is client text: JSON-escaped so it cannot forge log lines (the reliability checklist §2 R8).
    std::string line = "access " + req.remote_addr + " " + req.method + " " +
                       nlohmann::json(req.path).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + head;
    if (t_access.prompt_tokens >= 0) line += " prompt_tokens=" + std::to_string(t_access.prompt_tokens);
    if (t_access.cached_tokens >= 0) line += " cached_tokens=" + std::to_string(t_access.cached_tokens);
    if (t_access.completion_tokens >= 0) line += " completion_tokens=" + std::to_string(t_access.completion_tokens);
    if (!t_access.note.empty()) line += " " + t_access.note;
    if (!t_access.prompt.empty()) line += " prompt=" + t_access.prompt;
    t_access = AccessRecord{};
    std::lock_guard lock(log_mutex);
    options.log(line);
  }
};

OpenAiServer::OpenAiServer(ServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

OpenAiServer::~OpenAiServer() = default;

int OpenAiServer::bind() {
  const ServerOptions& o = impl_->options;
  if (o.port == 0) {
    const int port = impl_->http.bind_to_any_port(o.host);
    if (port <= 0) throw Error("cannot listen on " + o.host + " (any port)");
    return port;
  }
  if (!impl_->http.bind_to_port(o.host, o.port))
    throw Error("cannot listen on " + o.host + ":" + std::to_string(o.port) + " (address in use or not local?)");
  return o.port;
}

void OpenAiServer::serve() { impl_->http.listen_after_bind(); }

void OpenAiServer::set_ready(ServedModel model, GenerationBackend& backend) {
  impl_->model = std::move(model);
  impl_->backend.store(&backend);
  // A drain that began while loading stays a drain.
  auto loading = Impl::State::Loading;
  impl_->state.compare_exchange_strong(loading, Impl::State::Ready);
}

void OpenAiServer::begin_drain() { impl_->state.store(Impl::State::Draining); }

BackendLoad OpenAiServer::load() const {
  GenerationBackend* engine = impl_->backend.load();
  return engine ? engine->load() : BackendLoad{};
}

void OpenAiServer::stop() { impl_->http.stop(); }

}  // namespace deepmoe::server
