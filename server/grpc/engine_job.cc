#include "server/grpc/engine_job.h"

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/grpc/api_convert.h"
#include "server/imaging/image_decoder.h"

namespace blip2::server {
namespace {

double Seconds(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

absl::Status ShedStatus() {
  return absl::ResourceExhaustedError("shed: more urgent requests (a lower priority value) took its place in the "
                                      "queue; retry later");
}

}  // namespace

absl::Status ResolveImage(const ServiceCore& core, const engine::Engine& engine, const v1::Image& image,
                          const std::string& field, std::vector<float>* pixels, std::optional<uint64_t>* key) {
  switch (image.source_case()) {
    case v1::Image::kData: {
      if (image.data().empty()) return absl::InvalidArgumentError(field + ".data is empty");
      ASSIGN_OR_RETURN(*pixels, DecodeToPixels(image.data(), DecodeLimits{core.cfg.max_image_pixels()},
                                               engine.spec().image_processor, field + ".data"));
      return absl::OkStatus();
    }
    case v1::Image::kImageId: {
      ASSIGN_OR_RETURN(*key, ParseImageId(image.image_id()));
      return absl::OkStatus();
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(field, " is required: set ", field, ".data or ", field, ".image_id"));
  }
}

std::shared_ptr<EngineJob> EngineJob::Start(ServiceCore* core, JobInput input, JobCallbacks callbacks,
                                            Clock::time_point call_start, std::string request_id,
                                            AdmissionQueue::Ticket ticket) {
  std::shared_ptr<EngineJob> job(
      new EngineJob(core, std::move(input), std::move(callbacks), call_start, std::move(request_id), ticket));
  const bool still_queued = core->queue.OnShed(ticket, [weak = std::weak_ptr<EngineJob>(job)] {
    if (auto j = weak.lock()) j->Shed();
  });
  if (!still_queued) job->Shed();  // pushed out before it got here; Prepare ends it
  core->pool.Post([job] { job->Prepare(); });
  return job;
}

EngineJob::EngineJob(ServiceCore* core, JobInput input, JobCallbacks callbacks, Clock::time_point call_start,
                     std::string request_id, AdmissionQueue::Ticket ticket)
    : core_(core), input_(std::move(input)), callbacks_(std::move(callbacks)), call_start_(call_start),
      request_id_(std::move(request_id)), ticket_(ticket) {}

absl::StatusOr<engine::EngineRequest> EngineJob::BuildRequest() const {
  engine::EngineRequest request;
  request.overrides = OverridesFromProto(input_.options);
  // Validated here too, so the message names the API field.
  if (auto params = engine::ResolveGenerationParams(core_->engine->spec().generation, request.overrides,
                                                     core_->engine->limits());
      !params.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("options.", params.status().message()));
  }
  RETURN_IF_ERROR(ResolveImage(*core_, *core_->engine, input_.image, "image", &request.pixels, &request.image_key));
  request.prompt = input_.prompt;
  request.priority = input_.priority;
  request.deadline = input_.deadline;
  return request;
}

void EngineJob::Prepare() {
  bool cancelled;
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled = cancelled_;
  }
  if (shed()) return Done(ShedStatus());
  if (cancelled) return Done(absl::CancelledError("cancelled before it started"));
  auto request = BuildRequest();
  if (!request.ok()) return Done(request.status());
  const bool by_id = request->image_key.has_value();
  offset_ms_ = std::chrono::duration<double, std::milli>(Clock::now() - call_start_).count();
  auto id = core_->engine->Submit(std::move(*request), shared_from_this());
  if (!id.ok()) {
    if (by_id && absl::IsNotFound(id.status())) {
      return Done(absl::NotFoundError(absl::StrCat("image.image_id ", input_.image.image_id(), ": ",
                                                   id.status().message())));
    }
    return Done(id.status());
  }
  std::lock_guard<std::mutex> lock(mu_);
  engine_id_ = *id;
  if (cancelled_) core_->engine->Cancel(*id);
}

void EngineJob::Cancel() {
  std::lock_guard<std::mutex> lock(mu_);
  cancelled_ = true;
  if (engine_id_) core_->engine->Cancel(*engine_id_);
}

void EngineJob::Shed() {
  QueueState queued = kQueued;
  if (queue_state_.compare_exchange_strong(queued, kShed)) Cancel();  // else it started first: keep it
}

bool EngineJob::LeaveQueue(bool started) {
  QueueState queued = kQueued;
  if (queue_state_.compare_exchange_strong(queued, kLeft)) core_->LeaveQueue(ticket_, started);
  return queued != kShed;
}

void EngineJob::OnToken(int64_t token, const engine::TokenLogprob* logprob) {
  if (shed()) return;  // its call ends RESOURCE_EXHAUSTED; no partial output
  const Clock::time_point now = Clock::now();
  if (!saw_token_) {
    saw_token_ = true;
    if (!LeaveQueue(/*started=*/true)) return;  // shed just now
    core_->metrics->time_to_first_token.Observe({}, Seconds(call_start_, now));
  } else {
    core_->metrics->inter_token_latency.Observe({}, Seconds(last_token_, now));
  }
  last_token_ = now;
  if (callbacks_.on_token) callbacks_.on_token(token, logprob);
}

// Beam search and samples leave the queue here, single sequences at their
// first OnToken (just before).
void EngineJob::OnStarted() { LeaveQueue(/*started=*/true); }

void EngineJob::OnText(const std::string& text) {
  if (shed()) return;
  if (callbacks_.on_text) callbacks_.on_text(text);
}

void EngineJob::OnFinished(const engine::CaptionResult& result, const engine::Usage& usage) {
  if (shed()) return Done(ShedStatus());
  v1::Completion completion;
  FillCompletion(result, usage, core_->engine->spec().processor_num_query_tokens, offset_ms_, &completion);
  core_->metrics->queue_time.Observe({}, completion.usage().queue_ms() / 1000);
  if (!saw_token_ && usage.completion_tokens > 0) {  // beam search and samples report at the end
    core_->metrics->time_to_first_token.Observe({}, completion.usage().time_to_first_token_ms() / 1000);
  }
  Done(std::move(completion));
}

void EngineJob::OnError(const absl::Status& status) {
  if (shed()) return Done(ShedStatus());
  spdlog::debug("[{}] engine: {}", request_id_, status.ToString());
  Done(status);
}

void EngineJob::Done(absl::StatusOr<v1::Completion> result) {
  // Started: it reached the model and was not cancelled (cancels and errors
  // say nothing about the server's pace).
  LeaveQueue(result.ok() && !(result->sequences_size() > 0 &&
                              result->sequences(0).finish_reason() == v1::FINISH_REASON_CANCELLED));
  auto on_done = std::move(callbacks_.on_done);
  callbacks_ = {};  // nothing runs after the terminal callback
  on_done(std::move(result));
}

}  // namespace blip2::server
