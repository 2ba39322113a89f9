// `deepmoe serve`'s HTTP side (docs/SERVER.md): the OpenAI routes, /health, /metrics and the chat page on
// cpp-httplib, one thread per connection. Generation requests are parsed and planned on the connection's
// thread, handed to a GenerationBackend, and their tokens written back as they come (SSE when streaming);
// a client that goes away cancels its request. It listens before the model is loaded (/health answers 503
// until set_ready) and drains on begin_drain (503 to new work, running requests finish).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "server/generation_backend.h"
#include "server/generation_plan.h"
#include "server/openai_request.h"

namespace deepmoe::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;           // 0: any free port (bind() returns it)
  std::string api_key;       // empty: no authentication
  size_t max_body_bytes = size_t(2) << 20;
  int http_threads = 64;     // connections served at once (each streaming request holds one)
  bool log_prompts = false;  // access log lines carry the prompt text (JSON-escaped)
  RequestLimits limits;
  // Where access-log lines and notices go (one line per call, no newline); stderr when not set.
  std::function<void(const std::string&)> log;
};

class OpenAiServer {
 public:
  explicit OpenAiServer(ServerOptions options);
  ~OpenAiServer();

  // Binds the listening socket; returns the port. Throws deepmoe::Error naming the address when it cannot.
  int bind();
  // Serves until stop(); returns once every connection thread has finished.
  void serve();
  // The model is loaded: generation routes open, /health says ok. `backend` must outlive the server's serve().
  void set_ready(ServedModel model, GenerationBackend& backend);
  // Refuse new generation requests (503) and report /health 503; requests already admitted go on.
  void begin_drain();
  BackendLoad load() const;
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace deepmoe::server
