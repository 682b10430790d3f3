// The serving engine: one thread owns the model, the device, the KV storage,
// the image cache and the schedulers; everything else talks to it through a
// bounded inbox and per-request sinks. Torch-free header.
//
// A request's images go through the vision batcher (encoder + Q-Former once per
// distinct image, batched, cached by content hash); its text through
// continuous batching over the block-paged KV cache, where requests join and
// leave every step. With a retrieval checkpoint the engine serves
// SubmitRetrieval instead: images through the same batcher and cache, the
// texts of all requests ready together in one Q-Former pass. A generation
// model and a retrieval model can be served by one engine (one thread, one
// device queue): each has its own handle, Engine::retrieval(). Every decoding
// mode is batched this way: a beam or a returned sample is one more scheduler
// sequence, forked from its parent's KV blocks, stepping with everything else.
// docs/architecture.md maps each behaviour to its file.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/generation/captioner.h"
#include "engine/generation/generation_params.h"
#include "engine/model/image_encoder.h"
#include "engine/runtime/retrieval.h"

namespace blip2::engine {

class ModelRunner;  // engine/runtime/model_runner.h (internal)
struct ModelRoom;   // engine/runtime/model_room.h (internal)

struct EngineConfig {
  // KV cache.
  int64_t kv_block_size = 16;
  int64_t kv_blocks = 0;           // 0: from kv_cache_bytes
  int64_t kv_cache_bytes = 256ll << 20;
  double kv_watermark = 0.01;
  // Keep full prompt blocks after their request ends (LRU) and reuse them for
  // requests with the same image and prompt prefix.
  bool prefix_caching = true;
  // LLM scheduler.
  int64_t max_num_seqs = 128;
  int64_t max_batched_tokens = 4096;
  // Vision batcher.
  int64_t vision_max_batch = 8;
  std::chrono::microseconds vision_max_queue_delay{2000};
  int64_t image_cache_bytes = 64ll << 20;
  // Threads torch may use inside one operation (process-wide); 0 keeps
  // torch's default (one per core).
  int64_t intra_op_threads = 0;
  // Requests.
  int64_t inbox_capacity = 1024;
  int64_t max_prompt_tokens = 256;       // text tokens, after the image's query tokens
  int64_t max_registered_images = 1024;  // pinned in the image cache until released or expired
  // A registration's lease when the caller names none, and the longest one
  // a caller may ask for.
  std::chrono::seconds registration_ttl{3600};
  std::chrono::seconds max_registration_ttl{86400};
  // Retrieval requests.
  int64_t max_texts = 256;       // texts in one request
  int64_t max_text_tokens = 0;   // [CLS] + pieces + [SEP], longer texts are cut; 0: the Q-Former's positions
  GenerationLimits limits;
  // Tests only: wraps or replaces the model runner (one decoder step per
  // scheduler step), to run the loop with a fake model or inject faults.
  std::function<std::unique_ptr<ModelRunner>(std::unique_ptr<ModelRunner> real)> wrap_runner;
};

struct EngineRequest {
  std::vector<float> pixels;  // one preprocessed image, [C, H, W]
  std::string prompt;
  GenerationOverrides overrides;
  int priority = 0;  // lower runs first
  std::optional<std::chrono::steady_clock::time_point> deadline;
  // Instead of pixels: an image registered with RegisterImage.
  std::optional<uint64_t> image_key = std::nullopt;
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  double queue_ms = 0;           // submit -> first scheduled
  double time_to_first_token_ms = 0;
  double total_ms = 0;
};

// Receives one request's results, on the engine thread: must be quick and must
// not call back into the engine. After any number of OnText calls, exactly one
// of OnFinished (generation and registration), OnRetrieved (retrieval) or
// OnError.
class RequestSink {
 public:
  virtual ~RequestSink() = default;
  // Each new token id of a single-sequence request, as it is produced (beam
  // search and several samples report theirs in OnFinished), with its
  // log-probability when the request asked for them (else null).
  virtual void OnToken(int64_t token, const TokenLogprob* logprob) {}
  // New text of a single-sequence request as it is produced; beam search and
  // several samples send their first sequence's text once, before OnFinished.
  virtual void OnText(const std::string& text) {}
  // Once, when a generation request's first step has produced its first
  // token(s) (after that token's OnToken): it is running. Beam search and
  // several samples say so here, long before OnFinished.
  virtual void OnStarted() {}
  // Every sequence with its FinishReason.
  virtual void OnFinished(const CaptionResult& result, const Usage& usage) = 0;
  // A retrieval request's result (usage.prompt_tokens: its text tokens).
  virtual void OnRetrieved(const RetrievalResult& result, const Usage& usage) {}
  virtual void OnError(const absl::Status& status) = 0;
};

struct EngineStats {
  int64_t submitted = 0;
  int64_t finished = 0;
  int64_t failed = 0;
  int64_t images_encoded = 0;     // encoder forwards, per image
  int64_t encoder_batches = 0;
  int64_t image_cache_hits = 0;
  int64_t steps = 0;              // LLM steps
  int64_t preemptions = 0;
  int64_t waiting = 0;
  int64_t running = 0;
  int64_t kv_blocks_total = 0;
  int64_t kv_blocks_used = 0;
  int64_t generated_tokens = 0;
  int64_t image_cache_bytes = 0;
  int64_t image_cache_entries = 0;
  int64_t image_cache_pins = 0;   // held by requests in flight and registrations
  int64_t registered_images = 0;
  int64_t image_registrations = 0;          // leases held (an image registered twice holds two)
  int64_t image_registrations_expired = 0;  // leases that lapsed unreleased
  std::map<int64_t, int64_t> vision_batch_sizes;  // images per encoder forward -> forwards
  // Prefix cache (blocks of prompts): found at admission, computed, evicted;
  // blocks kept for reuse while nobody holds them.
  int64_t prefix_cache_hits = 0;
  int64_t prefix_cache_misses = 0;
  int64_t prefix_cache_evictions = 0;
  int64_t kv_blocks_cached = 0;
  int64_t block_copies = 0;  // copy-on-write copies of shared blocks (forks)
  // Where the engine thread's time goes, summed over LLM steps (ms): the
  // scheduler, building the decoder inputs, the forward pass, the sampler, and
  // emitting (sinks, detokenising, stop strings, scheduler update, forks).
  double step_schedule_ms = 0;
  double step_inputs_ms = 0;
  double step_forward_ms = 0;
  double step_sample_ms = 0;
  double step_emit_ms = 0;
  double vision_ms = 0;  // encoder batches run by the engine thread
  double admit_ms = 0;   // first steps of requests whose image is ready (T5: the encoder)
  double idle_ms = 0;    // waiting for work
};

// The key RegisterImage returns for these preprocessed pixels (a content hash).
uint64_t ImageContentKey(const std::vector<float>& pixels);

class Engine {
 public:
  // Loads `options.model_dir` and starts the engine thread. With
  // `retrieval_model_dir` (same device and dtype) a retrieval checkpoint is
  // loaded beside a generation one and served by the same thread: submit its
  // requests through retrieval().
  static absl::StatusOr<std::unique_ptr<Engine>> Start(const EngineOptions& options, const EngineConfig& config = {},
                                                       const std::string& retrieval_model_dir = "");
  ~Engine();  // the engine Start returned: Shutdown(0)

  // The handle for the engine's retrieval checkpoint: this engine when its
  // model is one, the second model's handle (owned by this engine, sharing its
  // thread, queues and stats), or null. Its spec, pixel shape, image
  // registrations and SubmitRetrieval are the retrieval model's.
  Engine* retrieval();

  // Validates and tokenizes on the caller's thread, then queues. Errors:
  // UNAVAILABLE after shutdown, RESOURCE_EXHAUSTED when the inbox is full,
  // INVALID_ARGUMENT for bad options, prompts or images, or a request that
  // could never fit the KV cache, a step (max_batched_tokens) or max_num_seqs
  // (with all its beams or samples), NOT_FOUND for an unregistered image_key.
  // Returns the request id. FAILED_PRECONDITION with a retrieval checkpoint.
  absl::StatusOr<int64_t> Submit(EngineRequest request, std::shared_ptr<RequestSink> sink);
  // Retrieval checkpoints only (else FAILED_PRECONDITION naming the model).
  // INVALID_ARGUMENT for no texts and no image, match without an image or
  // without texts, more than max_texts texts, text that is not UTF-8, bad
  // pixels; NOT_FOUND for an unregistered image_key. Texts over
  // max_text_tokens are cut, and the result says so.
  absl::StatusOr<int64_t> SubmitRetrieval(RetrievalRequest request, std::shared_ptr<RequestSink> sink);
  // Encodes an image once (with this handle's model) and keeps its embeddings
  // pinned in that model's image cache, so requests naming the returned key
  // (the content hash) skip the encoder. Each call takes a lease of `ttl`
  // (registration_ttl when unset; 1 s .. max_registration_ttl, else
  // INVALID_ARGUMENT); the image stays while any lease does: until as many
  // ReleaseImage calls as registrations, or until the leases expire.
  // The sink gets OnFinished (no sequences) once the embeddings are cached, or
  // OnError. RESOURCE_EXHAUSTED beyond max_registered_images distinct images.
  absl::StatusOr<uint64_t> RegisterImage(std::vector<float> pixels, std::shared_ptr<RequestSink> sink,
                                         std::optional<std::chrono::seconds> ttl = std::nullopt);
  // Gives back one lease; the image leaves with its last. NOT_FOUND when the
  // key holds none.
  absl::Status ReleaseImage(uint64_t key);
  // Ends a request within one step (its sink gets OnFinished with "cancelled").
  // Unknown or finished ids are ignored.
  void Cancel(int64_t id);
  // Stops accepting requests, lets running ones finish for up to `grace`, then
  // ends the rest with UNAVAILABLE. Every sink gets exactly one terminal event.
  void Shutdown(std::chrono::milliseconds grace);

  bool Healthy() const;
  // What this handle's checkpoint serves: Submit, or SubmitRetrieval.
  bool serves_generation() const;
  bool serves_retrieval() const;
  // Retrieval: the tokens a text is cut to ([CLS] and [SEP] included).
  int64_t max_text_tokens() const;
  EngineStats Stats() const;  // the whole engine: every model it serves
  const ModelSpec& spec() const;
  const GenerationLimits& limits() const;
  // The bytes token `id` stands for in decoded text (special tokens as
  // written, possibly part of a UTF-8 character); "" for an id the tokenizer
  // does not have (the model's vocabulary can be larger). Generation only.
  std::string TokenText(int64_t id) const;
  std::vector<int64_t> pixel_shape() const;

 private:
  struct Impl;
  Engine(std::shared_ptr<Impl> impl, ModelRoom* room, bool owner);
  absl::Status CheckPixels(const std::vector<float>& pixels) const;
  std::shared_ptr<Impl> impl_;
  ModelRoom* room_;                 // the checkpoint this handle serves
  bool owner_;                      // the engine Start returned: shuts it down when destroyed
  std::unique_ptr<Engine> second_;  // the second checkpoint's handle, when there is one
};

}  // namespace blip2::engine
