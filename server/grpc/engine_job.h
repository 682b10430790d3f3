// One generation request of a call, from API message to engine and back:
// decodes and preprocesses the image on the service's pool, validates the
// options, submits to the engine, times tokens for the metrics, and reports
// through callbacks. A call may run several jobs (GenerateBatch).
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "blip2.pb.h"
#include "server/grpc/service_core.h"

namespace blip2::server {

// An API image as the engine takes it: decoded and preprocessed pixels (with
// `engine`'s image processor), or a registered image's key. `field` names it
// in errors ("image", "images[2]").
absl::Status ResolveImage(const ServiceCore& core, const engine::Engine& engine, const v1::Image& image,
                          const std::string& field, std::vector<float>* pixels, std::optional<uint64_t>* key);

struct JobInput {
  v1::Image image;
  std::string prompt;
  v1::DecodingOptions options;
  int priority = 0;
  std::optional<Clock::time_point> deadline;
};

struct JobCallbacks {
  // On the engine thread, as tokens and text are produced; both optional.
  std::function<void(int64_t token, const engine::TokenLogprob* logprob)> on_token;
  std::function<void(const std::string& text)> on_text;
  // Exactly once, last: the completion, or why there is none.
  std::function<void(absl::StatusOr<v1::Completion> result)> on_done;
};

class EngineJob : public engine::RequestSink, public std::enable_shared_from_this<EngineJob> {
 public:
  // Queues the preparation; callbacks may run before this returns. `ticket`:
  // the job's place in the admission queue (ServiceCore::EnterQueue), which
  // it leaves at its first token or its end; if the queue sheds it first, it
  // ends with RESOURCE_EXHAUSTED.
  static std::shared_ptr<EngineJob> Start(ServiceCore* core, JobInput input, JobCallbacks callbacks,
                                          Clock::time_point call_start, std::string request_id,
                                          AdmissionQueue::Ticket ticket);
  // Ends the job soon (before or after it reached the engine): on_done then
  // gets a completion whose finish reason is CANCELLED, or an error.
  void Cancel();

  void OnToken(int64_t token, const engine::TokenLogprob* logprob) override;
  void OnText(const std::string& text) override;
  void OnStarted() override;
  void OnFinished(const engine::CaptionResult& result, const engine::Usage& usage) override;
  void OnError(const absl::Status& status) override;

 private:
  EngineJob(ServiceCore* core, JobInput input, JobCallbacks callbacks, Clock::time_point call_start,
            std::string request_id, AdmissionQueue::Ticket ticket);
  // A more urgent request took this one's place in the queue: end it soon
  // with RESOURCE_EXHAUSTED (any thread).
  void Shed();
  void Prepare();  // pool thread
  absl::StatusOr<engine::EngineRequest> BuildRequest() const;
  void Done(absl::StatusOr<v1::Completion> result);
  // Out of the admission queue (once); false when it was shed.
  bool LeaveQueue(bool started);

  ServiceCore* core_;
  JobInput input_;
  JobCallbacks callbacks_;
  const Clock::time_point call_start_;
  const std::string request_id_;
  double offset_ms_ = 0;  // call start -> submission
  Clock::time_point last_token_;
  bool saw_token_ = false;  // engine thread only
  const AdmissionQueue::Ticket ticket_;
  // In the admission queue, out of it (first token or end), or shed (its
  // tokens go nowhere; it ends RESOURCE_EXHAUSTED). Leaving and shedding race:
  // whichever moves it out of kQueued first wins.
  enum QueueState { kQueued, kLeft, kShed };
  std::atomic<QueueState> queue_state_{kQueued};
  bool shed() const { return queue_state_.load() == kShed; }

  std::mutex mu_;  // guards the two below
  bool cancelled_ = false;
  std::optional<int64_t> engine_id_;
};

}  // namespace blip2::server
