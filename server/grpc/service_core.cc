#include "server/grpc/service_core.h"

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace blip2::server {

CallRecord::CallRecord(ServiceCore* core, grpc::CallbackServerContext* ctx, const char* rpc)
    : core_(core), ctx_(ctx), rpc_(rpc), start_(Clock::now()) {
  // A caller's own id (up to 128 characters) ties our logs to theirs.
  auto given = ctx->client_metadata().find("x-request-id");
  if (given != ctx->client_metadata().end() && !given->second.empty() && given->second.size() <= 128) {
    id_.assign(given->second.data(), given->second.size());
  } else {
    id_ = absl::StrCat("r", core->next_request.fetch_add(1));
  }
  ctx->AddInitialMetadata("x-request-id", id_);
}

absl::Status ServiceCore::Authenticate(absl::string_view authorization) const {
  return keys == nullptr ? absl::OkStatus() : keys->Check(authorization);
}

absl::Status ServiceCore::Admit(CallKind kind, bool* held) {
  *held = false;
  if (draining.load()) return absl::UnavailableError("the server is shutting down; retry on another replica");
  if (kind == CallKind::kInfo) return absl::OkStatus();
  const config::Limits& limits = cfg.limits();
  // Retrieval and registrations do not queue as requests, but they share
  // the engine: a full queue refuses them too.
  if (kind == CallKind::kModel && queue.size() >= limits.max_queued_requests()) {
    return absl::ResourceExhaustedError(absl::StrCat("too many queued requests (max_queued_requests ",
                                                     limits.max_queued_requests(), "); retry later"));
  }
  const int64_t now = ++in_flight;
  *held = true;
  metrics->calls_in_flight.Set({}, static_cast<double>(now));
  if (now > limits.max_concurrent_streams()) {
    return absl::ResourceExhaustedError(absl::StrCat("too many concurrent calls (max_concurrent_streams ",
                                                     limits.max_concurrent_streams(), "); retry later"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<AdmissionQueue::Ticket>> ServiceCore::EnterQueue(int priority, int count) {
  ASSIGN_OR_RETURN(AdmissionQueue::Admitted admitted, queue.Enter(priority, count, Clock::now()));
  for (auto& shed : admitted.shed) shed();
  if (!admitted.shed.empty()) metrics->requests_shed.Add({}, static_cast<double>(admitted.shed.size()));
  metrics->admission_queue.Set({}, static_cast<double>(queue.size()));
  metrics->admission_drain_rate.Set({}, queue.drain_rate());
  return std::move(admitted.tickets);
}

void ServiceCore::LeaveQueue(AdmissionQueue::Ticket ticket, bool started) {
  queue.Leave(ticket, started, Clock::now());
  metrics->admission_queue.Set({}, static_cast<double>(queue.size()));
}

void ServiceCore::Leave() { metrics->calls_in_flight.Set({}, static_cast<double>(--in_flight)); }

CallRecord::~CallRecord() {
  if (admitted_) core_->Leave();
}

absl::Status CallRecord::Admit(CallKind kind) {
  const auto& metadata = ctx_->client_metadata();
  const auto given = metadata.find("authorization");
  RETURN_IF_ERROR(core_->Authenticate(
      given == metadata.end() ? absl::string_view() : absl::string_view(given->second.data(), given->second.size())));
  return core_->Admit(kind, &admitted_);
}

absl::Status CallRecord::CheckSize(const google::protobuf::Message& request) const {
  const size_t bytes = request.ByteSizeLong();
  const int64_t limit = core_->cfg.limits().max_message_bytes();
  if (static_cast<int64_t>(bytes) > limit) {
    return absl::InvalidArgumentError(absl::StrCat("request is ", bytes, " bytes; the limit is ", limit,
                                                   " (max_message_bytes)"));
  }
  return absl::OkStatus();
}

void CallRecord::Finished(const grpc::Status& status, int64_t generated_tokens) {
  if (finished_) return;
  finished_ = true;
  const double seconds = std::chrono::duration<double>(Clock::now() - start_).count();
  // absl and gRPC share the canonical codes and their names.
  const std::string code = absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code()));
  core_->metrics->requests.Add({rpc_, code});
  core_->metrics->request_duration.Observe({rpc_}, seconds);
  // The access log: one line per call.
  spdlog::info("[{}] {} {} {:.1f} ms tokens={} peer={}{}{}", id_, rpc_, code, seconds * 1000, generated_tokens,
               ctx_->peer(), status.ok() ? "" : " error=", status.error_message());
}

grpc::Status CallRecord::ClientGone() const {
  // The client's own deadline timer usually fires first: its cancellation
  // reaches us before our copy of the deadline (counted from when we read the
  // headers, so later by our queueing delay) has passed. A cancellation that
  // close to the deadline is the deadline's doing.
  constexpr auto kDeadlineSlack = std::chrono::seconds(1);
  if (const auto d = deadline(); d && Clock::now() + kDeadlineSlack >= *d) {
    return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the call's deadline passed");
  }
  return grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the call");
}

std::optional<Clock::time_point> CallRecord::deadline() const {
  const auto d = ctx_->deadline();
  if (d == std::chrono::system_clock::time_point::max()) return std::nullopt;
  const auto left = d - std::chrono::system_clock::now();
  if (left > std::chrono::hours(24 * 365)) return std::nullopt;  // effectively none
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(left);
}

}  // namespace blip2::server
