// `deepmoe serve`: the OpenAI-compatible HTTP server (docs/SERVER.md). It listens first and loads the model
// while /health answers 503, then serves until SIGTERM or SIGINT: new requests get 503, running ones finish
// (at most --drain-seconds, then they are cancelled), and it exits 0.
#include <CLI/CLI.hpp>

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "command.h"
#include "core/error.h"
#include "engine_options.h"
#include "generation_options.h"
#include "speculative_options.h"
#include "server/api_key.h"
#include "server/openai_server.h"
#include "server/batched_runtime_backend.h"
#include "tokenizer/chat_template.h"

namespace deepmoe::tools {
namespace {

struct ServeArgs {
  EngineArgs engine;
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string api_key_file;
  int64_t max_queue = 64;
  int64_t max_running = 16;
  int64_t max_batch_tokens = 256;
  double kv_gb = 0;
  int64_t max_body_mb = 2;
  double drain_seconds = 30.0;
  bool log_prompts = false;
  SpeculativeArgs speculative;
};

void log_line(const std::string& line) {
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

// The model's name in the API: its folder's name.
std::string model_id(const std::string& dir) {
  std::filesystem::path p(dir);
  while (!p.empty() && p.filename().empty()) p = p.parent_path();
  const std::string name = p.filename().string();
  return name.empty() ? "deepmoe" : name;
}

// SIGTERM / SIGINT, received by one thread through sigwait (blocked in every other thread), so shutdown runs as
// ordinary code rather than in a signal handler.
class ShutdownSignal {
 public:
  ShutdownSignal() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGTERM);
    sigaddset(&set_, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);  // before any thread starts, so all inherit it
    thread_ = std::thread([this] {
      int sig = 0;
      sigwait(&set_, &sig);
      std::lock_guard lock(mutex_);
      signal_ = sig;
      cv_.notify_all();
    });
  }
  ~ShutdownSignal() {
    if (!received()) pthread_kill(thread_.native_handle(), SIGTERM);  // wake it to end
    thread_.join();
  }
  bool received() {
    std::lock_guard lock(mutex_);
    return signal_ != 0;
  }
  int wait() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return signal_ != 0; });
    return signal_;
  }

 private:
  sigset_t set_;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable cv_;
  int signal_ = 0;
};

void serve_on_leader(const ServeArgs& args, LoadedModel& loaded, server::OpenAiServer& server,
                     ShutdownSignal& shutdown);

void run_serve(const ServeArgs& args) {
  server::ServerOptions options;
  options.host = args.host;
  options.port = args.port;
  if (!args.api_key_file.empty()) options.api_key = server::read_api_key_file(args.api_key_file);
  options.max_body_bytes = size_t(args.max_body_mb) << 20;
  // Every admitted request holds a connection thread while it streams; the margin serves /health, /metrics
  // and the refusals of a full queue.
  options.http_threads = int(args.max_queue + args.max_running) + 16;
  options.log_prompts = args.log_prompts;
  options.log = log_line;

  ::signal(SIGPIPE, SIG_IGN);  // a vanished client is a failed write, not the end of the process
  // Before any thread starts (MPI's included), so that SIGTERM/SIGINT reach only the signal thread, on every rank.
  ShutdownSignal shutdown;
  // Rank 0 listens (and answers "loading") before the model loads; under mpirun the other ranks only follow its
  // engine steps.
  std::unique_ptr<server::OpenAiServer> server;
  std::thread http;
  auto stop_http = [&] {
    server->stop();
    http.join();
  };
  EngineJob job;
  try {
    job = open_engine_job(args.engine, /*with_tokenizer=*/true, {}, [&] {
      server = std::make_unique<server::OpenAiServer>(options);
      const int port = server->bind();
      log_line("deepmoe serve: listening on http://" + args.host + ":" + std::to_string(port) +
               " (loading the model)");
      http = std::thread([&] { server->serve(); });
    });
  } catch (...) {
    if (server) stop_http();
    throw;
  }
  run_engine_job(job, [&] {
    try {
      serve_on_leader(args, job.model, *server, shutdown);
    } catch (...) {
      stop_http();
      throw;
    }
    stop_http();  // returns once every connection has written its last byte
    log_line("deepmoe serve: stopped");
  });
}

// Rank 0's part once the model is loaded: answers requests until SIGTERM/SIGINT, then drains.
void serve_on_leader(const ServeArgs& args, LoadedModel& loaded, server::OpenAiServer& server,
                     ShutdownSignal& shutdown) {
  std::optional<ChatTemplate> chat_template;
  try {
    chat_template = ChatTemplate::from_tokenizer_config(loaded.dir);
  } catch (const Error& e) {
    log_line(std::string("deepmoe serve: no chat template, /v1/chat/completions will answer 400: ") + e.what());
  }
  server::BatchedRuntimeBackend backend(loaded, server::BatchedBackendOptions{
                                                    .max_waiting = args.max_queue,
                                                    .max_running = args.max_running,
                                                    .max_batch_tokens = args.max_batch_tokens,
                                                    .kv_bytes = uint64_t(args.kv_gb * double(1ull << 30)),
                                                    .draft_tokens = args.speculative.mode == "mtp"
                                                                        ? args.speculative.draft_tokens
                                                                        : 0,
                                                });
  server::ServedModel served;
  served.id = model_id(loaded.dir);
  served.tokenizer = loaded.tokenizer.get();
  served.chat_template = std::move(chat_template);
  served.context_length = loaded.lm->context_length();
  served.vocab_size = loaded.lm->vocab_size();
  const std::string id = served.id;
  server.set_ready(std::move(served), backend);
  if (!shutdown.received())
    log_line("deepmoe serve: ready, model '" + id + "'" +
             (args.speculative.mode == "mtp"
                  ? ", MTP speculative decoding with " + std::to_string(args.speculative.draft_tokens) + " draft token(s)"
                  : std::string()));

  const int sig = shutdown.wait();
  server.begin_drain();
  char drain_note[64];
  std::snprintf(drain_note, sizeof drain_note, ", draining (at most %g s)", args.drain_seconds);
  log_line(std::string("deepmoe serve: ") + (sig == SIGINT ? "SIGINT" : "SIGTERM") + drain_note);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(args.drain_seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    const server::BackendLoad load = server.load();
    if (load.running == 0 && load.waiting == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const server::BackendLoad left = server.load();
  if (left.running + left.waiting > 0)
    log_line("deepmoe serve: drain time is up, cancelling " + std::to_string(left.running + left.waiting) +
             " request(s)");
  backend.stop();  // cancels what is left; their clients get an error event
}

CommandRegistration registration{
    {"serve", "OpenAI-compatible HTTP server: /v1/chat/completions, /v1/completions, /v1/models, /health, /metrics",
     [](CLI::App& sub) {
       auto args = std::make_shared<ServeArgs>();
       add_engine_options(sub, args->engine);
       sub.add_option("--host", args->host, "Address to listen on")->capture_default_str();
       sub.add_option("--port", args->port, "Port to listen on (0: any free port, printed at start)")
           ->check(CLI::Range(0, 65535))
           ->capture_default_str();
       sub.add_option("--api-key-file", args->api_key_file,
                      "File holding the API key clients must send as 'Authorization: Bearer <key>' (default: none)")
           ->check(CLI::ExistingFile);
       sub.add_option("--max-running", args->max_running,
                      "Requests (choices) generated together in one batch; more wait in the queue")
           ->check(CLI::Range(int64_t(1), int64_t(1024)))
           ->capture_default_str();
       sub.add_option("--max-batch-tokens", args->max_batch_tokens,
                      "Tokens per engine step: every running request's next token, then chunks of waiting prompts")
           ->check(CLI::Range(int64_t(1), int64_t(1) << 20))
           ->capture_default_str();
       sub.add_option("--kv-gb", args->kv_gb,
                      "KV cache budget in GiB, shared equally by the ranks that hold requests (0: what memory allows after "
                      "the weights, minus a margin)")
           ->check(CLI::Range(0.0, 1e6))
           ->capture_default_str();
       add_speculative_options(sub, args->speculative);
       sub.add_option("--max-queue", args->max_queue,
                      "Requests (choices) waiting for a place in the batch; more get HTTP 429")
           ->check(CLI::Range(int64_t(1), int64_t(1024)))
           ->capture_default_str();
       sub.add_option("--max-body-mb", args->max_body_mb, "Largest request body in MiB; larger ones get HTTP 413")
           ->check(CLI::Range(int64_t(1), int64_t(1024)))
           ->capture_default_str();
       sub.add_option("--drain-seconds", args->drain_seconds,
                      "On SIGTERM/SIGINT, how long running requests may go on before they are cancelled")
           ->check(CLI::Range(0.0, 86400.0))
           ->capture_default_str();
       sub.add_flag("--log-prompts", args->log_prompts, "Put each request's prompt text in its access-log line");
       sub.callback([args] { run_serve(*args); });
     }}};

}  // namespace
}  // namespace deepmoe::tools
