// A RequestSink for one retrieval request that the caller waits on.
// Torch-free header.
#pragma once

#include <condition_variable>
#include <mutex>
#include <optional>

#include "engine/runtime/engine.h"

namespace blip2::engine {

class RetrievalWaiter : public RequestSink {
 public:
  void OnFinished(const CaptionResult&, const Usage&) override {
    Set(absl::InternalError("a retrieval request ended as a generation"));
  }
  void OnRetrieved(const RetrievalResult& result, const Usage& usage) override {
    std::lock_guard<std::mutex> lock(mu_);
    usage_ = usage;
    result_ = result;
    cv_.notify_all();
  }
  void OnError(const absl::Status& status) override { Set(status); }

  // Blocks until the request ends.
  absl::StatusOr<RetrievalResult> Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return result_.has_value(); });
    return *result_;
  }
  Usage usage() const {
    std::lock_guard<std::mutex> lock(mu_);
    return usage_;
  }

 private:
  void Set(const absl::Status& status) {
    std::lock_guard<std::mutex> lock(mu_);
    result_ = status;
    cv_.notify_all();
  }
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::optional<absl::StatusOr<RetrievalResult>> result_;
  Usage usage_;
};

}  // namespace blip2::engine
