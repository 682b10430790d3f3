// A RequestSink for callers that wait: collects a request's result, forwards
// streamed text, and wakes the waiting thread at the terminal event.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>

#include "engine/runtime/engine.h"

namespace blip2::engine {

class WaitingSink : public RequestSink {
 public:
  // `on_text` (optional) runs on the engine thread for each streamed piece.
  explicit WaitingSink(std::function<void(const std::string&)> on_text = nullptr) : on_text_(std::move(on_text)) {}

  void OnText(const std::string& text) override {
    if (on_text_) on_text_(text);
  }
  void OnFinished(const CaptionResult& result, const Usage& usage) override {
    std::lock_guard<std::mutex> lock(mu_);
    result_ = result;
    usage_ = usage;
    cv_.notify_all();
  }
  void OnError(const absl::Status& status) override {
    std::lock_guard<std::mutex> lock(mu_);
    result_ = status;
    cv_.notify_all();
  }

  // Blocks until the request ends.
  absl::StatusOr<CaptionResult> Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return result_.has_value(); });
    return *result_;
  }
  Usage usage() const {
    std::lock_guard<std::mutex> lock(mu_);
    return usage_;
  }

 private:
  std::function<void(const std::string&)> on_text_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::optional<absl::StatusOr<CaptionResult>> result_;
  Usage usage_;
};

}  // namespace blip2::engine
