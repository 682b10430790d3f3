// State every call of the blip2.v1 service shares, and the per-call record
// that admits a call, names it (request id) and writes its access-log line.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "common/thread_pool.h"
#include "server/grpc/admission_queue.h"
#include "engine/runtime/engine.h"
#include "server/grpc/server_metrics.h"
#include "server/security/api_keys.h"
#include "server_config.pb.h"

namespace blip2::server {

using Clock = std::chrono::steady_clock;

// What admission checks for a call.
enum class CallKind {
  kInfo,        // GetModelInfo, ReleaseImage, /v1/models: refused only while draining
  kModel,       // Match, Embed, RegisterImage: also max_concurrent_streams and a full queue
  kGeneration,  // Generate, Caption, Answer, GenerateBatch, chat: max_concurrent_streams;
                // its requests then enter the admission queue (EnterQueue)
};

struct ServiceCore {
  ServiceCore(engine::Engine* engine, engine::Engine* retrieval, const config::ServerConfig& cfg,
              ServerMetrics* metrics, ApiKeys* keys)
      : engine(engine),
        retrieval(retrieval),
        cfg(cfg),
        metrics(metrics),
        keys(keys),
        pool(cfg.preprocess_threads(), "blip2-decode"),
        writer(1, "blip2-writer"),
        queue(AdmissionQueue::Options{cfg.limits().max_queued_requests(),
                                      std::chrono::milliseconds(cfg.limits().max_queue_wait_ms()),
                                      std::max<int64_t>(1, cfg.preprocess_threads())}) {}

  engine::Engine* engine;     // model_dir's: generation, RegisterImage
  engine::Engine* retrieval;  // the handle serving Match and Embed (model_dir's, or retrieval_model_dir's on the same engine thread), or null
  const config::ServerConfig cfg;
  ServerMetrics* metrics;
  ApiKeys* keys;              // null: no key needed
  common::ThreadPool pool;    // image decoding and preprocessing, off the gRPC threads
  common::ThreadPool writer;  // starts stream writes, off the engine thread
  std::atomic<bool> draining{false};
  std::atomic<int64_t> in_flight{0};  // admitted model calls
  AdmissionQueue queue;               // engine requests admitted, no token yet
  std::atomic<int64_t> next_request{1};

  // Admission, the same for every front (gRPC calls, HTTP requests):
  // UNAVAILABLE while draining; then by `kind` (above) RESOURCE_EXHAUSTED.
  // When `*held` comes back true the call holds an in-flight slot (even when
  // refused): Leave() it.
  absl::Status Admit(CallKind kind, bool* held);
  void Leave();
  // A generation call's `count` requests of `priority` enter the admission
  // queue (all or none; RESOURCE_EXHAUSTED when they do not fit, see
  // admission_queue.h); less urgent requests it pushes out are shed here.
  absl::StatusOr<std::vector<AdmissionQueue::Ticket>> EnterQueue(int priority, int count);
  // A request left the queue (see AdmissionQueue::Leave).
  void LeaveQueue(AdmissionQueue::Ticket ticket, bool started);
  // OK, or UNAUTHENTICATED when the server has API keys and `authorization`
  // (the header's or the metadata's value) is not "Bearer <a key>".
  absl::Status Authenticate(absl::string_view authorization) const;
};

// One gRPC call: its id, admission and access log. Not thread-safe; each
// reactor owns one and uses it from its own reactions.
class CallRecord {
 public:
  CallRecord(ServiceCore* core, grpc::CallbackServerContext* ctx, const char* rpc);
  ~CallRecord();  // releases the admission

  // UNAUTHENTICATED without a valid API key (when the server has keys), then
  // ServiceCore::Admit's checks for `kind`.
  absl::Status Admit(CallKind kind);
  // INVALID_ARGUMENT when the request is larger than max_message_bytes.
  absl::Status CheckSize(const google::protobuf::Message& request) const;
  // Once, with the status the call ends with: metrics and the access-log line.
  void Finished(const grpc::Status& status, int64_t generated_tokens = 0);
  // The status to end with after the client went away: DEADLINE_EXCEEDED
  // when its deadline has passed or is less than a second away (the client's
  // timer fires before ours), else CANCELLED.
  grpc::Status ClientGone() const;

  const std::string& id() const { return id_; }
  const char* rpc() const { return rpc_; }
  Clock::time_point start() const { return start_; }
  std::optional<Clock::time_point> deadline() const;

 private:
  ServiceCore* core_;
  grpc::CallbackServerContext* ctx_;
  const char* rpc_;
  std::string id_;
  Clock::time_point start_;
  bool admitted_ = false;
  bool finished_ = false;
};

}  // namespace blip2::server
