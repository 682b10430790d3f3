// A server-streaming reactor that keeps exactly one write in flight. Messages
// produced meanwhile wait in a queue; mergeable ones (token deltas) fold into
// the last waiting message, so a slow reader gets fewer, larger messages and
// the producer (the engine thread) never blocks.
#pragma once

#include <deque>
#include <mutex>
#include <optional>

#include <grpcpp/grpcpp.h>

namespace blip2::server {

template <class Response>
class StreamReactor : public grpc::ServerWriteReactor<Response> {
 public:
  // Queues a message; `mergeable` lets Merge fold it into the last queued one.
  void Push(Response message, bool mergeable) {
    const Response* to_write = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (broken_ || finish_) return;
      if (!writing_) {
        writing_ = true;
        current_ = std::move(message);
        to_write = &current_;
      } else if (mergeable && !pending_.empty() && last_mergeable_) {
        Merge(pending_.back(), message);
      } else {
        pending_.push_back(std::move(message));
        last_mergeable_ = mergeable;
      }
    }
    if (to_write) this->StartWrite(to_write);  // outside the lock: reactions may run inline
  }

  // Ends the call with `status` once every queued message is written (or the
  // client is gone). Call once; nothing may be pushed afterwards.
  void FinishWhenFlushed(const grpc::Status& status) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      finish_ = status;
      if (writing_) return;  // OnWriteDone finishes
    }
    this->Finish(status);
  }

  void OnWriteDone(bool ok) override {
    const Response* to_write = nullptr;
    std::optional<grpc::Status> finish;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!ok) {  // the stream is broken (client gone): drop the rest
        broken_ = true;
        pending_.clear();
      }
      if (!pending_.empty()) {
        current_ = std::move(pending_.front());
        pending_.pop_front();
        to_write = &current_;
      } else {
        writing_ = false;
        finish = finish_;
      }
    }
    if (to_write) {
      this->StartWrite(to_write);
    } else if (finish) {
      this->Finish(*finish);
    }
  }

 protected:
  // Folds `next` into `last` (both mergeable).
  virtual void Merge(Response& last, const Response& next) = 0;

 private:
  std::mutex mu_;
  Response current_;  // the message being written
  std::deque<Response> pending_;
  bool last_mergeable_ = false;
  bool writing_ = false;
  bool broken_ = false;
  std::optional<grpc::Status> finish_;
};

}  // namespace blip2::server
