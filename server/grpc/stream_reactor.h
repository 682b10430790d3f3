// A server-streaming reactor that keeps exactly one write in flight. Messages
// produced meanwhile wait in a queue; mergeable ones (token deltas) fold into
// the last waiting message, so a slow reader gets fewer, larger messages and
// the producer never blocks.
//
// The producer (the engine thread) only queues: writes start on `writer`, a
// thread of the service's, or in OnWriteDone on gRPC's threads. gRPC's write
// path (serialising, the transport, often the socket send itself) runs on the
// calling thread, and the engine thread has better things to do.
#pragma once

#include <deque>
#include <mutex>
#include <optional>

#include <grpcpp/grpcpp.h>

#include "common/thread_pool.h"

namespace blip2::server {

template <class Response>
class StreamReactor : public grpc::ServerWriteReactor<Response> {
 public:
  explicit StreamReactor(common::ThreadPool* writer) : writer_(writer) {}

  // Queues a message; `mergeable` lets Merge fold it into the last queued one.
  void Push(Response message, bool mergeable) {
    bool schedule = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (broken_ || finish_) return;
      if (mergeable && !pending_.empty() && last_mergeable_) {
        Merge(pending_.back(), message);
      } else {
        pending_.push_back(std::move(message));
        last_mergeable_ = mergeable;
      }
      schedule = !writing_ && !scheduled_;
      scheduled_ = scheduled_ || schedule;
    }
    if (schedule) writer_->Post([this] { Flush(); });
  }

  // Ends the call with `status` once every queued message is written (or the
  // client is gone). Call once; nothing may be pushed afterwards.
  void FinishWhenFlushed(const grpc::Status& status) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      finish_ = status;
      if (writing_ || scheduled_ || (!pending_.empty() && !broken_)) return;  // Flush or OnWriteDone finishes
    }
    this->Finish(status);
  }

  void OnWriteDone(bool ok) override {
    std::unique_lock<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) {  // the stream is broken (client gone): drop the rest
      broken_ = true;
      pending_.clear();
    }
    WriteNextOrFinish(lock);
  }

 protected:
  // Folds `next` into `last` (both mergeable).
  virtual void Merge(Response& last, const Response& next) = 0;

 private:
  // On the writer thread.
  void Flush() {
    std::unique_lock<std::mutex> lock(mu_);
    scheduled_ = false;
    if (writing_) return;  // OnWriteDone continues
    WriteNextOrFinish(lock);
  }

  // Starts the next write, or finishes when nothing is left; releases `lock`
  // first either way (reactions may run inline).
  void WriteNextOrFinish(std::unique_lock<std::mutex>& lock) {
    if (!pending_.empty()) {
      current_ = std::move(pending_.front());
      pending_.pop_front();
      writing_ = true;
      lock.unlock();
      this->StartWrite(&current_);
      return;
    }
    const std::optional<grpc::Status> finish = scheduled_ ? std::nullopt : finish_;
    lock.unlock();
    if (finish) this->Finish(*finish);
  }

  common::ThreadPool* writer_;
  std::mutex mu_;
  Response current_;  // the message being written
  std::deque<Response> pending_;
  bool last_mergeable_ = false;
  bool writing_ = false;    // a write is in flight
  bool scheduled_ = false;  // a Flush is queued on the writer
  bool broken_ = false;
  std::optional<grpc::Status> finish_;
};

}  // namespace blip2::server
