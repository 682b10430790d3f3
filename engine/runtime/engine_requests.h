// The engine's requests, one type per kind, each in one phase at a time (the
// queue that holds it). Internal (ATen). Engine thread, except while queued
// in the inbox.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include <ATen/ATen.h>

#include "engine/runtime/engine.h"
#include "engine/runtime/generation_task.h"
#include "engine/runtime/retrieval_batch.h"

namespace blip2::engine {

using Clock = std::chrono::steady_clock;

enum class Phase {
  kInbox,          // submitted, not yet seen by the engine thread
  kAwaitingImage,  // in the vision batcher
  kAwaitingTexts,  // retrieval: image ready (or none), waiting for the next text batch
  kScheduled,      // generation: in the scheduler (waiting for blocks or running)
};

struct Request {
  enum class Kind { kGeneration, kRegistration, kRetrieval };
  explicit Request(Kind k) : kind(k) {}
  virtual ~Request() = default;

  const Kind kind;
  int64_t id = 0;
  Phase phase = Phase::kInbox;
  std::shared_ptr<RequestSink> sink;
  Clock::time_point submitted;
  bool has_image = true;
  uint64_t image_key = 0;
  bool registered_image = false;  // names an image from RegisterImage instead of sending pixels
  std::vector<float> pixels;  // until encoded; empty for a registered image
  bool pinned = false;        // holds a pin on its image's cache entry
  ModelRoom* room = nullptr;  // the checkpoint it runs on (its image cache and batcher)
};

// Submit: caption or answer.
struct GenerationRequest : Request {
  GenerationRequest() : Request(Kind::kGeneration) {}
  std::string prompt;
  int priority = 0;
  std::optional<Clock::time_point> deadline;
  GenerationParams params;
  std::vector<int64_t> input_ids;  // the prompt as the model sees it (T5: the encoder's input)
  at::Tensor embeds;               // [Q, D] once the image is encoded (pinned in the cache)
  std::unique_ptr<GenerationTask> task;  // once admitted to the scheduler
  std::optional<Clock::time_point> first_scheduled, first_token;
};

// RegisterImage: encode and pin.
struct RegistrationRequest : Request {
  RegistrationRequest() : Request(Kind::kRegistration) {}
  Clock::time_point expires;  // its lease's end
};

// SubmitRetrieval: match and embed.
struct RetrievalWork : Request {
  RetrievalWork() : Request(Kind::kRetrieval) {}
  RetrievalJob job;
};

}  // namespace blip2::engine
