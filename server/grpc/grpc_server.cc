#include "server/grpc/grpc_server.h"

#include <filesystem>
#include <thread>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/grpc/blip2_service.h"
#include "server/grpc/http_server.h"
#include "server/grpc/server_config.h"
#include "server/grpc/server_metrics.h"
#include "server/http/http_front.h"
#include "server/security/api_keys.h"
#include "server/security/tls.h"

namespace blip2::server {
namespace {

// One short caption (or one match) of a blank image, so the first user request
// does not pay for lazy initialisation (allocator pools, kernels, the thread pool).
absl::Status WarmUp(engine::Engine& engine) {
  struct Waiter : engine::RequestSink {
    std::mutex mu;
    std::condition_variable cv;
    std::optional<absl::Status> done;
    void OnFinished(const engine::CaptionResult&, const engine::Usage&) override { Set(absl::OkStatus()); }
    void OnRetrieved(const engine::RetrievalResult&, const engine::Usage&) override { Set(absl::OkStatus()); }
    void OnError(const absl::Status& s) override { Set(s); }
    void Set(absl::Status s) {
      std::lock_guard<std::mutex> lock(mu);
      done = std::move(s);
      cv.notify_all();
    }
  };
  const std::vector<int64_t> shape = engine.pixel_shape();
  std::vector<float> blank(static_cast<size_t>(shape[0] * shape[1] * shape[2]), 0.f);
  auto waiter = std::make_shared<Waiter>();
  if (engine.serves_generation()) {
    engine::EngineRequest request;
    request.pixels = std::move(blank);
    request.overrides.max_new_tokens = 2;
    RETURN_IF_ERROR(engine.Submit(std::move(request), waiter).status());
  } else {
    RETURN_IF_ERROR(engine.SubmitRetrieval({std::move(blank), std::nullopt, {"a photo"}, true, false}, waiter).status());
  }
  std::unique_lock<std::mutex> lock(waiter->mu);
  waiter->cv.wait(lock, [&] { return waiter->done.has_value(); });
  return *waiter->done;
}

}  // namespace

struct Blip2Server::Impl {
  config::ServerConfig cfg;
  std::unique_ptr<engine::Engine> engine;
  std::unique_ptr<ServerMetrics> metrics;
  std::unique_ptr<ApiKeys> keys;  // when security.api_keys_file is set
  std::unique_ptr<Blip2Service> service;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<HttpServer> http;
  std::unique_ptr<HttpFront> openai;  // the OpenAI-compatible API, when http_port >= 0
  std::atomic<bool> serving{false};
  int port = 0;
  bool drained = false;
};

Blip2Server::Blip2Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Blip2Server::~Blip2Server() { Drain(std::chrono::milliseconds(0)); }

absl::StatusOr<std::unique_ptr<Blip2Server>> Blip2Server::Start(const config::ServerConfig& cfg) {
  RETURN_IF_ERROR(ValidateServerConfig(cfg));
  auto impl = std::make_unique<Impl>();
  impl->cfg = cfg;
  // Security first: a bad certificate or key file fails before the model loads.
  ASSIGN_OR_RETURN(const std::shared_ptr<grpc::ServerCredentials> credentials,
                   GrpcServerCredentials(cfg.security()));
  if (!cfg.security().api_keys_file().empty()) {
    ASSIGN_OR_RETURN(impl->keys, ApiKeys::Load(cfg.security().api_keys_file()));
  }
  const auto loading = std::chrono::steady_clock::now();
  // A retrieval_model_dir is served by the same engine thread as model_dir.
  ASSIGN_OR_RETURN(impl->engine,
                   engine::Engine::Start(ToEngineOptions(cfg), ToEngineConfig(cfg), cfg.retrieval_model_dir()));
  engine::Engine* retrieval = impl->engine->retrieval();
  if (cfg.warmup()) {
    RETURN_IF_ERROR(WarmUp(*impl->engine));
    if (retrieval != nullptr && retrieval != impl->engine.get()) RETURN_IF_ERROR(WarmUp(*retrieval));
  }
  spdlog::info("model loaded{} in {:.2f} s", cfg.warmup() ? " and warmed up" : "",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - loading).count());
  impl->metrics = std::make_unique<ServerMetrics>(impl->engine.get());
  impl->service = std::make_unique<Blip2Service>(impl->engine.get(), retrieval, cfg, impl->metrics.get(),
                                                 impl->keys.get());

  if (cfg.metrics_port() >= 0) {
    Impl* raw = impl.get();
    ASSIGN_OR_RETURN(impl->http, HttpServer::Start(cfg.host(), cfg.metrics_port(), [raw](const std::string& path) {
      if (path == "/metrics") {
        return HttpResponse{200, "text/plain; version=0.0.4; charset=utf-8", raw->metrics->registry.Render()};
      }
      if (path == "/healthz") {
        return raw->serving ? HttpResponse{200, "text/plain; charset=utf-8", "SERVING\n"}
                            : HttpResponse{503, "text/plain; charset=utf-8", "NOT_SERVING\n"};
      }
      return HttpResponse{404, "text/plain; charset=utf-8", "not found; try /metrics or /healthz\n"};
    }));
  }

  if (cfg.http_port() >= 0) {
    const auto name = [](const std::string& dir) {  // the folder's name, also for "dir/"
      const std::filesystem::path p = std::filesystem::path(dir).lexically_normal();
      return (p.has_filename() ? p.filename() : p.parent_path().filename()).string();
    };
    const ServiceCore& core = impl->service->core();
    const std::string model = core.engine->serves_generation() ? name(cfg.model_dir()) : "";
    const std::string retrieval = !cfg.retrieval_model_dir().empty() ? name(cfg.retrieval_model_dir())
                                  : core.retrieval != nullptr        ? name(cfg.model_dir())
                                                                     : "";
    ASSIGN_OR_RETURN(impl->openai, HttpFront::Start(&impl->service->core(), cfg.host(), cfg.http_port(),
                                                    cfg.http_threads(), model, retrieval, cfg.security()));
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat(cfg.host(), ":", cfg.port()), credentials, &impl->port);
  // gRPC itself refuses messages far beyond the limit (RESOURCE_EXHAUSTED);
  // up to twice the limit the service answers INVALID_ARGUMENT naming it.
  const int64_t transport_limit = std::min<int64_t>(INT32_MAX, 2 * cfg.limits().max_message_bytes());
  builder.SetMaxReceiveMessageSize(static_cast<int>(transport_limit));
  builder.RegisterService(impl->service.get());
  impl->server = builder.BuildAndStart();
  if (!impl->server || impl->port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", cfg.host(), ":", cfg.port()));
  }
  grpc::HealthCheckServiceInterface* health = impl->server->GetHealthCheckService();
  health->SetServingStatus(true);
  health->SetServingStatus("blip2.v1.Blip2", true);
  impl->serving = true;
  spdlog::info("serving blip2.v1.Blip2 on {}:{} ({}{}){}", cfg.host(), impl->port,
               cfg.security().tls_cert_file().empty() ? "plaintext"
               : cfg.security().tls_client_ca_file().empty() ? "TLS"
                                                              : "mutual TLS",
               impl->keys ? absl::StrCat(", ", impl->keys->size(), " API keys") : std::string(),
               impl->http ? absl::StrCat("; metrics on http://", cfg.host(), ":", impl->http->port(), "/metrics")
                          : std::string());
  if (impl->openai) {
    spdlog::info("serving the OpenAI API on {}://{}:{}/v1", cfg.security().tls_cert_file().empty() ? "http" : "https",
                 cfg.host(), impl->openai->port());
  }
  return std::unique_ptr<Blip2Server>(new Blip2Server(std::move(impl)));
}

int Blip2Server::port() const { return impl_->port; }

int Blip2Server::http_port() const { return impl_->openai ? impl_->openai->port() : -1; }

int Blip2Server::metrics_port() const { return impl_->http ? impl_->http->port() : -1; }

std::string Blip2Server::RenderMetrics() const { return impl_->metrics->registry.Render(); }

absl::Status Blip2Server::Reload() {
  absl::Status status = impl_->keys ? impl_->keys->Reload() : absl::OkStatus();
  if (impl_->openai) status.Update(impl_->openai->Reload());
  return status;
}

void Blip2Server::Drain(std::chrono::milliseconds grace) {
  Impl& m = *impl_;
  if (m.drained) return;
  m.drained = true;
  const auto deadline = std::chrono::steady_clock::now() + grace;
  // Refuse new calls before saying NOT_SERVING: a client that saw the change
  // must not get a call admitted.
  m.service->StartDraining();
  m.serving = false;
  m.server->GetHealthCheckService()->SetServingStatus(false);
  spdlog::info("draining: {} calls in flight, up to {} ms", m.service->calls_in_flight(), grace.count());
  // Calls in flight (including those still decoding their image) finish...
  while (m.service->calls_in_flight() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // ...or end UNAVAILABLE when the grace period is over.
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::max(deadline - std::chrono::steady_clock::now(), std::chrono::steady_clock::duration::zero()));
  m.engine->Shutdown(left);
  // Streams that are not ours (health Watch) are cancelled after a moment.
  m.server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  m.server->Wait();
  m.openai.reset();  // after the engine: every request's callbacks have run
  m.http.reset();
  spdlog::info("drained");
}

}  // namespace blip2::server
