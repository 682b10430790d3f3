// The engine loop: inbox -> vision batcher -> scheduler -> model runner ->
// sampler -> emitters, on the one thread that owns the device. The parts live
// in their own files (docs/architecture.md); this file holds the queues, the
// request lifecycle and the step that calls the parts in order.
#include "engine/runtime/engine.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <pthread.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "engine/model/blip2_model.h"
#include "engine/runtime/engine_requests.h"
#include "engine/runtime/image_cache.h"
#include "engine/runtime/model_room.h"
#include "engine/runtime/model_runner.h"
#include "engine/runtime/prefix_keys.h"
#include "engine/runtime/retrieval_batch.h"
#include "engine/generation/sampler.h"
#include "engine/tokenizer/unicode.h"
#include "engine/model/torch_util.h"
#include "scheduler/scheduler.h"

namespace blip2::engine {
namespace {

double Ms(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

// Accumulates the time since the last call into one of EngineStats' phase fields.
class PhaseClock {
 public:
  PhaseClock() : last_(Clock::now()) {}
  double Lap() {
    const Clock::time_point now = Clock::now();
    const double ms = Ms(last_, now);
    last_ = now;
    return ms;
  }

 private:
  Clock::time_point last_;
};

}  // namespace

struct Engine::Impl {
  EngineConfig config;
  // The checkpoints served: the first generates (or retrieves, alone); a
  // second, when there is one, retrieves.
  std::vector<std::unique_ptr<ModelRoom>> rooms;
  int64_t kv_blocks = 0;
  int64_t image_token = -1;

  // Shared with submitting threads, under `mu`.
  mutable std::mutex mu;
  std::condition_variable wake;
  std::deque<std::unique_ptr<Request>> inbox;
  std::vector<int64_t> cancels;
  std::vector<std::pair<ModelRoom*, uint64_t>> releases;  // released keys, for the engine thread to unpin
  bool accepting = true;
  bool stopping = false;
  Clock::time_point stop_deadline;
  int64_t next_id = 1;                 // request ids and the ids of forked sequences
  EngineStats stats;
  std::optional<Clock::time_point> idle_since;  // the engine thread is waiting for work
  std::thread thread;

  // Engine thread only.
  std::map<int64_t, std::unique_ptr<Request>> active;
  std::deque<int64_t> retrieval_queue;  // image ready (or none needed), to run in the next text batch
  std::unique_ptr<scheduler::Scheduler> sched;
  std::unique_ptr<ModelRunner> runner;

  // The generation model (its KV cache, scheduler and runner are the engine's).
  const Blip2Model& generator() const { return *rooms.front()->model; }
  bool VisionWaiting() const {
    return std::any_of(rooms.begin(), rooms.end(), [](const auto& room) { return !room->vision->empty(); });
  }
  void Loop();
  absl::StatusOr<int64_t> Enqueue(std::unique_ptr<Request> r);
  void TakeInbox(std::vector<std::unique_ptr<Request>>* added, std::vector<int64_t>* cancelled,
                 std::vector<std::pair<ModelRoom*, uint64_t>>* released, bool* stop_now);
  void Accept(std::unique_ptr<Request> r);
  void CancelRequest(int64_t id);
  absl::Status AllocateKvCache();
  void RunVision(ModelRoom& room, bool force);
  void Admit(const std::vector<int64_t>& ids);
  void Schedule(GenerationRequest& g);
  void FinishRegistration(Request& r);
  void RunRetrievalQueue();
  void RunRetrievals(ModelRoom& room, const std::vector<int64_t>& ids);
  void RunStep();
  void Finish(int64_t id, bool cancelled);
  void Fail(int64_t id, const absl::Status& status);
  void Release(int64_t id);
  SequenceId NewId() {
    std::lock_guard<std::mutex> lock(mu);
    return next_id++;
  }
  bool LlmIdle() const { return sched->num_running() + sched->num_waiting() == 0; }
  // Queue and cache gauges, refreshed before every terminal event so a caller
  // woken by one sees them current.
  // Under `mu`: the earliest lease end over the rooms, and the expiry of
  // those due (their images, when no lease is left, into `releases`).
  std::optional<Clock::time_point> NextLeaseExpiry() const {
    std::optional<Clock::time_point> next;
    for (const auto& room : rooms) {
      const auto e = room->registered.next_expiry();
      if (e && (!next || *e < *next)) next = e;
    }
    return next;
  }
  void ExpireLeases(Clock::time_point now) {
    for (const auto& room : rooms) {
      for (uint64_t key : room->registered.Expire(now, &stats.image_registrations_expired)) {
        releases.emplace_back(room.get(), key);
      }
    }
  }
  void UpdateGauges() {
    std::lock_guard<std::mutex> lock(mu);
    stats.waiting = sched->num_waiting() + static_cast<int64_t>(retrieval_queue.size());
    stats.image_cache_bytes = stats.image_cache_entries = stats.image_cache_pins = stats.registered_images = 0;
    for (const auto& room : rooms) {
      stats.waiting += room->vision->size();
      stats.image_cache_bytes += room->images->bytes();
      stats.image_cache_entries += room->images->size();
      stats.image_cache_pins += room->images->pins();
      stats.registered_images += static_cast<int64_t>(room->registration_pins.size());
    }
    stats.running = sched->num_running();
    stats.kv_blocks_used = sched->num_used_blocks();
    stats.kv_blocks_cached = sched->num_cached_blocks();
    const scheduler::PrefixCacheStats& prefix = sched->prefix_cache_stats();
    stats.prefix_cache_hits = prefix.hits;
    stats.prefix_cache_misses = prefix.misses;
    stats.prefix_cache_evictions = prefix.evictions;
  }
  void Count(int64_t EngineStats::*field, int64_t n = 1) {
    std::lock_guard<std::mutex> lock(mu);
    stats.*field += n;
  }
};

uint64_t ImageContentKey(const std::vector<float>& pixels) { return ImageKey(pixels.data(), pixels.size()); }

Engine::Engine(std::shared_ptr<Impl> impl, ModelRoom* room, bool owner)
    : impl_(std::move(impl)), room_(room), owner_(owner) {}

Engine::~Engine() {
  if (owner_) Shutdown(std::chrono::milliseconds(0));
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Start(const EngineOptions& options, const EngineConfig& config,
                                                      const std::string& retrieval_model_dir) {
  auto impl = std::make_shared<Impl>();
  impl->config = config;
  if (config.intra_op_threads > 0) at::set_num_threads(static_cast<int>(config.intra_op_threads));
  ASSIGN_OR_RETURN(std::unique_ptr<ModelRoom> first, LoadModelRoom(options, config));
  const bool generates = first->serves_generation();
  impl->rooms.push_back(std::move(first));
  if (!retrieval_model_dir.empty()) {
    if (!generates) {
      return absl::InvalidArgumentError(absl::StrCat(options.model_dir, " is a retrieval checkpoint already; ",
                                                     retrieval_model_dir, " cannot be served beside it"));
    }
    EngineOptions second = options;
    second.model_dir = retrieval_model_dir;
    second.quantization = "none";  // it has no language model to quantize
    ASSIGN_OR_RETURN(std::unique_ptr<ModelRoom> room, LoadModelRoom(second, config));
    if (!room->serves_retrieval()) {
      return absl::InvalidArgumentError(absl::StrCat("retrieval_model_dir ", retrieval_model_dir,
                                                     " is not a retrieval checkpoint"));
    }
    impl->rooms.push_back(std::move(room));
  }
  impl->image_token = impl->generator().spec.config.image_token_index.value_or(-1);
  // A retrieval checkpoint alone has no language model and so no KV cache.
  if (generates) RETURN_IF_ERROR(impl->AllocateKvCache());
  scheduler::SchedulerConfig sc;
  sc.block_size = config.kv_block_size;
  sc.num_blocks = impl->kv_blocks;
  sc.max_num_seqs = config.max_num_seqs;
  sc.max_batched_tokens = config.max_batched_tokens;
  sc.watermark = config.kv_watermark;
  sc.prefix_caching = config.prefix_caching;
  impl->sched = std::make_unique<scheduler::Scheduler>(sc);
  impl->stats.kv_blocks_total = impl->kv_blocks;
  common::LogInfo("engine", absl::StrCat("KV cache: ", impl->kv_blocks, " blocks of ", config.kv_block_size,
                                         " tokens; max ", config.max_num_seqs, " sequences, ",
                                         config.max_batched_tokens, " tokens per step; prefix caching ",
                                         config.prefix_caching ? "on" : "off", "; ", at::get_num_threads(),
                                         " intra-op threads"));
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->Loop(); });
  pthread_setname_np(impl->thread.native_handle(), "blip2-engine");
  std::unique_ptr<Engine> engine(new Engine(impl, impl->rooms.front().get(), /*owner=*/true));
  if (impl->rooms.size() > 1) engine->second_.reset(new Engine(impl, impl->rooms[1].get(), /*owner=*/false));
  return engine;
}

Engine* Engine::retrieval() {
  if (room_->serves_retrieval()) return this;
  return second_ && second_->room_->serves_retrieval() ? second_.get() : nullptr;
}

// Sizes and allocates the paged KV cache: a block count, or a byte budget.
absl::Status Engine::Impl::AllocateKvCache() {
  try {
    c10::InferenceMode guard;
    const TextDecoder& decoder = generator().decoder();
    KvCache probe = decoder.MakeCache(1, config.kv_block_size);
    // Never more than max_num_seqs sequences of the longest possible length can use.
    const int64_t useful =
        config.max_num_seqs *
        scheduler::BlocksFor(generator().MaxDecoderTokens(config.limits.max_new_tokens), config.kv_block_size);
    kv_blocks = config.kv_blocks > 0 ? config.kv_blocks
                                     : std::min(useful, config.kv_cache_bytes / probe.bytes_per_block());
    if (kv_blocks <= 0) return absl::InvalidArgumentError("KV cache budget holds no block");
    runner = std::make_unique<PagedModelRunner>(decoder, decoder.MakeCache(kv_blocks, config.kv_block_size));
    if (config.wrap_runner) runner = config.wrap_runner(std::move(runner));
  } catch (const std::exception& e) {
    return StatusFromException(e, "allocating the KV cache");
  }
  return absl::OkStatus();
}

const ModelSpec& Engine::spec() const { return room_->model->spec; }

const GenerationLimits& Engine::limits() const { return impl_->config.limits; }

std::string Engine::TokenText(int64_t id) const {
  const Tokenizer* tokenizer = room_->model->tokenizer.get();
  if (tokenizer == nullptr || id < 0) return "";
  absl::StatusOr<std::string> bytes = tokenizer->TokenBytes(id, /*skip_special_tokens=*/false, /*first=*/false);
  return bytes.ok() ? *bytes : "";
}

std::vector<int64_t> Engine::pixel_shape() const { return room_->pixel_shape(); }

bool Engine::serves_generation() const { return room_->serves_generation(); }
bool Engine::serves_retrieval() const { return room_->serves_retrieval(); }
int64_t Engine::max_text_tokens() const { return room_->max_text_tokens; }

absl::StatusOr<int64_t> Engine::Submit(EngineRequest request, std::shared_ptr<RequestSink> sink) {
  Impl& m = *impl_;
  if (!serves_generation()) {
    return absl::FailedPreconditionError(absl::StrCat("the model ", spec().model_dir,
                                                      " is a retrieval checkpoint: it does not generate text"));
  }
  auto g = std::make_unique<GenerationRequest>();
  ASSIGN_OR_RETURN(g->params, ResolveGenerationParams(spec().generation, request.overrides, m.config.limits));
  if (!request.image_key) RETURN_IF_ERROR(CheckPixels(request.pixels));
  ASSIGN_OR_RETURN(g->input_ids,
                   room_->model->InputIds(request.prompt, m.config.max_prompt_tokens, g->params.max_new_tokens));
  // Decoder tokens: OPT's prompt or T5's start token, then the new ones; one
  // sequence per beam or returned sample.
  const int64_t decoder_prompt = room_->model->is_t5() ? 1 : static_cast<int64_t>(g->input_ids.size());
  const int64_t total = decoder_prompt + g->params.max_new_tokens;
  const int64_t width = g->params.num_beams > 1 ? g->params.num_beams
                        : g->params.do_sample ? g->params.num_return_sequences
                                              : 1;
  const std::string sequences = width > 1 ? absl::StrCat(" for each of ", width, " sequences") : "";
  switch (scheduler::FitOf(m.sched->config(), decoder_prompt, g->params.max_new_tokens, width)) {
    case scheduler::Fit::kFits:
      break;
    case scheduler::Fit::kExceedsCache:
      return absl::InvalidArgumentError(absl::StrCat("prompt plus max_new_tokens (", total, " tokens", sequences,
                                                     ") needs more KV blocks than the cache has (", m.kv_blocks, ")"));
    case scheduler::Fit::kExceedsStep:
      return absl::InvalidArgumentError(absl::StrCat("prompt plus max_new_tokens (", total, " tokens", sequences,
                                                     ") exceeds what one step computes (max_batched_tokens ",
                                                     m.config.max_batched_tokens, ")"));
    case scheduler::Fit::kExceedsSequences:
      return absl::InvalidArgumentError(absl::StrCat(width, " beams or returned sequences exceed max_num_seqs (",
                                                     m.config.max_num_seqs, ")"));
  }
  g->registered_image = request.image_key.has_value();
  g->image_key = request.image_key ? *request.image_key : ImageKey(request.pixels.data(), request.pixels.size());
  g->pixels = std::move(request.pixels);
  g->prompt = std::move(request.prompt);
  g->priority = request.priority;
  g->deadline = request.deadline;
  g->room = room_;
  g->sink = std::move(sink);
  return m.Enqueue(std::move(g));
}

absl::StatusOr<int64_t> Engine::SubmitRetrieval(RetrievalRequest request, std::shared_ptr<RequestSink> sink) {
  Impl& m = *impl_;
  if (!serves_retrieval()) {
    return absl::FailedPreconditionError(absl::StrCat("the model ", spec().model_dir,
                                                      " is not a retrieval checkpoint: it cannot match or embed"));
  }
  auto r = std::make_unique<RetrievalWork>();
  r->has_image = request.image_key.has_value() || !request.pixels.empty();
  if (r->has_image && !request.image_key) RETURN_IF_ERROR(CheckPixels(request.pixels));
  if (!r->has_image && request.texts.empty()) return absl::InvalidArgumentError("give an image, texts or both");
  if (request.match && (!r->has_image || request.texts.empty())) {
    return absl::InvalidArgumentError(r->has_image ? "texts is empty: nothing to match the image against"
                                                   : "matching needs an image");
  }
  if (static_cast<int64_t>(request.texts.size()) > m.config.max_texts) {
    return absl::InvalidArgumentError(absl::StrCat(request.texts.size(), " texts; the limit is ", m.config.max_texts,
                                                   " (max_texts)"));
  }
  for (size_t i = 0; i < request.texts.size(); ++i) {
    if (!IsValidUtf8(request.texts[i])) return absl::InvalidArgumentError(absl::StrCat("texts[", i, "] is not valid UTF-8"));
    WordPieceTokenizer::Encoding e = room_->text_tokenizer->Encode(request.texts[i], room_->max_text_tokens);
    r->job.text_ids.push_back(std::move(e.ids));
    r->job.truncated.push_back(e.truncated);
  }
  r->job.match = request.match;
  r->job.features = request.features;
  if (r->has_image) {
    r->image_key = request.image_key ? *request.image_key : ImageKey(request.pixels.data(), request.pixels.size());
  }
  r->registered_image = request.image_key.has_value();
  r->pixels = std::move(request.pixels);
  r->room = room_;
  r->sink = std::move(sink);
  return m.Enqueue(std::move(r));
}

absl::Status Engine::CheckPixels(const std::vector<float>& pixels) const {
  const auto shape = pixel_shape();
  if (pixels.size() != static_cast<size_t>(shape[0] * shape[1] * shape[2])) {
    return absl::InvalidArgumentError(absl::StrCat("image has ", pixels.size(), " pixel values; expected ",
                                                   shape[0] * shape[1] * shape[2]));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Engine::RegisterImage(std::vector<float> pixels, std::shared_ptr<RequestSink> sink,
                                               std::optional<std::chrono::seconds> ttl) {
  const std::chrono::seconds lease = ttl.value_or(impl_->config.registration_ttl);
  if (lease.count() < 1 || lease > impl_->config.max_registration_ttl) {
    return absl::InvalidArgumentError(absl::StrCat("ttl_seconds ", lease.count(), " is outside [1, ",
                                                   impl_->config.max_registration_ttl.count(), "]"));
  }
  RETURN_IF_ERROR(CheckPixels(pixels));
  auto r = std::make_unique<RegistrationRequest>();
  r->expires = Clock::now() + lease;
  r->image_key = ImageKey(pixels.data(), pixels.size());
  r->pixels = std::move(pixels);
  r->room = room_;
  r->sink = std::move(sink);
  const uint64_t key = r->image_key;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (!room_->registered.Contains(key) && room_->registered.images() >= impl_->config.max_registered_images) {
      return absl::ResourceExhaustedError(absl::StrCat("already ", room_->registered.images(),
                                                       " registered images (max_registered_images); release some"));
    }
  }
  RETURN_IF_ERROR(impl_->Enqueue(std::move(r)).status());
  return key;
}

absl::Status Engine::ReleaseImage(uint64_t key) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  ASSIGN_OR_RETURN(const bool last, room_->registered.Remove(key));
  if (last) {  // the engine thread unpins it
    impl_->releases.emplace_back(room_, key);
    impl_->wake.notify_one();
  }
  return absl::OkStatus();
}

// Queues a validated request; registrations also enter `registered` here, so a
// request naming the key may follow at once.
absl::StatusOr<int64_t> Engine::Impl::Enqueue(std::unique_ptr<Request> r) {
  r->submitted = Clock::now();
  std::lock_guard<std::mutex> lock(mu);
  if (!accepting) return absl::UnavailableError("the engine is shutting down");
  if (static_cast<int64_t>(inbox.size()) >= config.inbox_capacity) {
    return absl::ResourceExhaustedError(absl::StrCat("the engine's inbox is full (", config.inbox_capacity,
                                                     " requests); retry later"));
  }
  if (r->kind == Request::Kind::kRegistration) {
    r->room->registered.Add(r->image_key, static_cast<RegistrationRequest&>(*r).expires);
  } else if (r->registered_image && !r->room->registered.Contains(r->image_key)) {
    if (r->room != rooms.front().get()) {
      return absl::NotFoundError("the image is not registered with the retrieval model (images are registered for "
                                 "the generation model; send this one's pixels instead)");
    }
    return absl::NotFoundError("the image is not registered (RegisterImage it first)");
  }
  r->id = next_id++;
  const int64_t id = r->id;
  inbox.push_back(std::move(r));
  ++stats.submitted;
  wake.notify_one();
  return id;
}

void Engine::Cancel(int64_t id) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->cancels.push_back(id);
  impl_->wake.notify_one();
}

void Engine::Shutdown(std::chrono::milliseconds grace) {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (!impl_->accepting && !impl_->thread.joinable()) return;
    impl_->accepting = false;
    impl_->stopping = true;
    impl_->stop_deadline = Clock::now() + grace;
    impl_->wake.notify_one();
  }
  if (impl_->thread.joinable()) impl_->thread.join();
}

bool Engine::Healthy() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->accepting;
}

EngineStats Engine::Stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  EngineStats stats = impl_->stats;
  if (impl_->idle_since) stats.idle_ms += Ms(*impl_->idle_since, Clock::now());
  for (const auto& room : impl_->rooms) stats.image_registrations += room->registered.leases();  // current
  return stats;
}

void Engine::Impl::TakeInbox(std::vector<std::unique_ptr<Request>>* added, std::vector<int64_t>* cancelled,
                             std::vector<std::pair<ModelRoom*, uint64_t>>* released, bool* stop_now) {
  const Clock::time_point start = Clock::now();
  std::unique_lock<std::mutex> lock(mu);
  idle_since = start;  // Stats() counts a wait still going on
  if (inbox.empty() && cancels.empty() && releases.empty() && active.empty() && !stopping) {
    const auto woken = [&] { return !inbox.empty() || !cancels.empty() || !releases.empty() || stopping; };
    if (const auto expiry = NextLeaseExpiry()) {
      wake.wait_until(lock, *expiry, woken);  // idle until work or a lease's end
    } else {
      wake.wait(lock, woken);
    }
  } else if (inbox.empty() && cancels.empty() && VisionWaiting() && LlmIdle() && retrieval_queue.empty()) {
    // Only images wait: give others a moment to join their batch.
    wake.wait_for(lock, config.vision_max_queue_delay, [&] { return !inbox.empty() || stopping; });
  }
  while (!inbox.empty()) {
    added->push_back(std::move(inbox.front()));
    inbox.pop_front();
  }
  cancelled->swap(cancels);
  ExpireLeases(Clock::now());  // their images into `releases`
  released->swap(releases);
  stats.idle_ms += Ms(start, Clock::now());
  idle_since.reset();
  *stop_now = stopping && Clock::now() >= stop_deadline;
}

void Engine::Impl::Loop() {
  c10::InferenceMode guard;
  while (true) {
    std::vector<std::unique_ptr<Request>> added;
    std::vector<int64_t> cancelled;
    std::vector<std::pair<ModelRoom*, uint64_t>> released;
    bool stop_now = false;
    TakeInbox(&added, &cancelled, &released, &stop_now);
    for (const auto& [room, key] : released) {
      if (room->registration_pins.erase(key) > 0) room->images->Unpin(key);
    }
    if (!released.empty()) UpdateGauges();
    for (auto& r : added) Accept(std::move(r));
    for (int64_t id : cancelled) CancelRequest(id);
    if (stop_now) {
      std::vector<int64_t> ids;
      for (const auto& [id, r] : active) ids.push_back(id);
      for (int64_t id : ids) Fail(id, absl::UnavailableError("the engine shut down before the request finished"));
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      if (stopping && active.empty() && inbox.empty()) return;
    }
    // One encoder batch per model and iteration at most, so images never hold
    // decoding back for longer than one batch; with no text to decode, no waiting.
    for (const auto& room : rooms) RunVision(*room, /*force=*/LlmIdle());
    RunRetrievalQueue();
    RunStep();
  }
}

void Engine::Impl::Accept(std::unique_ptr<Request> r) {
  Request& req = *r;
  active.emplace(req.id, std::move(r));
  if (req.has_image) {
    req.phase = Phase::kAwaitingImage;
    req.room->vision->Add(req.id, req.image_key, std::move(req.pixels), req.submitted);
  } else {
    req.phase = Phase::kAwaitingTexts;
    retrieval_queue.push_back(req.id);
  }
}

void Engine::Impl::CancelRequest(int64_t id) {
  auto it = active.find(id);
  if (it == active.end()) return;  // unknown or already finished: harmless
  Request& r = *it->second;
  switch (r.kind) {
    case Request::Kind::kRetrieval:
      Fail(id, absl::CancelledError("the request was cancelled"));
      break;
    case Request::Kind::kRegistration:
      break;  // it only encodes; it ends on its own within a batch
    case Request::Kind::kGeneration:
      if (r.phase == Phase::kScheduled) {
        sched->Cancel(id);  // ends at the next Schedule, which frees its blocks
      } else {
        Finish(id, /*cancelled=*/true);
      }
      break;
  }
}

void Engine::Impl::RunVision(ModelRoom& room, bool force) {
  if (room.vision->empty()) return;
  const Clock::time_point start = Clock::now();
  const VisionBatcher::Outcome out = room.vision->Run(force);
  for (const auto& [id, status] : out.failed) Fail(id, status);
  {
    std::lock_guard<std::mutex> lock(mu);
    if (out.encoded > 0) {
      stats.images_encoded += out.encoded;
      ++stats.encoder_batches;
      ++stats.vision_batch_sizes[out.encoded];
      stats.vision_ms += Ms(start, Clock::now());
    }
    stats.image_cache_hits += static_cast<int64_t>(out.cache_hit.size());
  }
  std::vector<int64_t> generation;
  for (int64_t id : out.ready) {
    Request& r = *active.at(id);
    if (r.kind == Request::Kind::kRegistration) {
      FinishRegistration(r);
      continue;
    }
    const CachedImage& cached = *room.images->Find(r.image_key);
    room.images->Pin(r.image_key);
    r.pinned = true;
    if (r.kind == Request::Kind::kRetrieval) {
      static_cast<RetrievalWork&>(r).job.image = cached;
      r.phase = Phase::kAwaitingTexts;
      retrieval_queue.push_back(id);
      continue;
    }
    static_cast<GenerationRequest&>(r).embeds = cached.projected;
    generation.push_back(id);
  }
  Admit(generation);
}

// Requests whose image is ready get their first decoder step (for T5 one
// encoder forward over all of them), then join the scheduler.
void Engine::Impl::Admit(const std::vector<int64_t>& ids) {
  if (ids.empty()) return;
  const Clock::time_point start = Clock::now();
  std::vector<EncoderInput> prompts;
  for (int64_t id : ids) {
    const auto& g = static_cast<const GenerationRequest&>(*active.at(id));
    prompts.push_back({g.input_ids, g.embeds});
  }
  std::vector<DecoderInput> steps;
  try {
    steps = generator().FirstSteps(prompts);
  } catch (const std::exception& e) {
    const absl::Status status = StatusFromException(e, "encoding prompts");
    for (int64_t id : ids) Fail(id, status);
    return;
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    auto& g = static_cast<GenerationRequest&>(*active.at(ids[i]));
    RequestSink* sink = g.sink.get();
    TokenSink on_token;
    TextPieceSink on_text;
    if (sink != nullptr) {
      on_token = [sink](int64_t token, const TokenLogprob* logprob) { sink->OnToken(token, logprob); };
      on_text = [sink](const std::string& text) { sink->OnText(text); };
    }
    g.task =
        std::make_unique<GenerationTask>(g.id, g.params, std::move(steps[i]), *generator().tokenizer, on_token, on_text);
    Schedule(g);
  }
  std::lock_guard<std::mutex> lock(mu);
  stats.admit_ms += Ms(start, Clock::now());
}

void Engine::Impl::Schedule(GenerationRequest& g) {
  scheduler::SequenceRequest r;
  r.id = g.id;
  r.prompt_tokens = static_cast<int64_t>(g.task->first_step().token_ids.size());
  r.max_new_tokens = g.params.max_new_tokens;
  r.priority = g.priority;
  r.deadline = g.deadline;
  r.width = g.task->width();
  if (config.prefix_caching) {
    // T5's decoder reads the encoder's output: its blocks depend on the whole
    // encoder input, not only on the image.
    const uint64_t seed = generator().is_t5() ? PrefixSeed(g.image_key, g.input_ids) : g.image_key;
    r.block_keys = PrefixBlockKeys(seed, g.task->first_step().token_ids, config.kv_block_size);
  }
  if (sched->Add(r) != scheduler::AddResult::kQueued) {
    Fail(g.id, absl::InternalError("the scheduler refused a request that Submit admitted"));
    return;
  }
  g.phase = Phase::kScheduled;
}

void Engine::Impl::FinishRegistration(Request& r) {
  bool still_registered;
  {
    std::lock_guard<std::mutex> lock(mu);
    still_registered = r.room->registered.Contains(r.image_key);
  }
  // Released while it was being encoded: nothing to pin.
  if (still_registered && r.room->registration_pins.insert(r.image_key).second) r.room->images->Pin(r.image_key);
  Usage usage;
  usage.queue_ms = usage.total_ms = Ms(r.submitted, Clock::now());
  const std::shared_ptr<RequestSink> sink = r.sink;
  Count(&EngineStats::finished);
  Release(r.id);
  UpdateGauges();
  if (sink) sink->OnFinished(CaptionResult{}, usage);
}

// Every retrieval request whose image is ready: their texts in one batch per model.
void Engine::Impl::RunRetrievalQueue() {
  if (retrieval_queue.empty()) return;
  std::map<ModelRoom*, std::vector<int64_t>> by_room;
  for (int64_t id : retrieval_queue) by_room[active.at(id)->room].push_back(id);
  retrieval_queue.clear();
  for (const auto& [room, ids] : by_room) RunRetrievals(*room, ids);
}

void Engine::Impl::RunRetrievals(ModelRoom& room, const std::vector<int64_t>& ids) {
  std::vector<RetrievalJob> jobs;
  for (int64_t id : ids) jobs.push_back(static_cast<RetrievalWork&>(*active.at(id)).job);
  std::vector<RetrievalResult> results;
  try {
    results = RunRetrieval(*room.model, jobs, room.text_tokenizer->pad_id());
  } catch (const std::exception& e) {
    const absl::Status status = StatusFromException(e, "retrieval");
    for (int64_t id : ids) Fail(id, status);
    return;
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    const auto& r = static_cast<RetrievalWork&>(*active.at(ids[i]));
    Usage usage;
    for (const auto& text : r.job.text_ids) usage.prompt_tokens += static_cast<int64_t>(text.size());
    usage.queue_ms = usage.time_to_first_token_ms = usage.total_ms = Ms(r.submitted, Clock::now());
    const std::shared_ptr<RequestSink> sink = r.sink;
    Count(&EngineStats::finished);
    Release(ids[i]);
    UpdateGauges();
    if (sink) sink->OnRetrieved(results[i], usage);
  }
}

// One LLM step: schedule -> build inputs -> forward -> sample -> emit.
void Engine::Impl::RunStep() {
  if (LlmIdle()) return;
  PhaseClock clock;
  const scheduler::SchedulerOutput out = sched->Schedule(Clock::now());
  for (int64_t id : out.expired) Fail(id, absl::DeadlineExceededError("the request's deadline passed"));
  for (int64_t id : out.cancelled) Finish(id, /*cancelled=*/true);
  if (!out.preempted.empty()) Count(&EngineStats::preemptions, static_cast<int64_t>(out.preempted.size()));
  if (out.sequences.empty()) return;
  const double schedule_ms = clock.Lap();

  // The requests of this step, each once, in step order, with their rows
  // (a request's sequences are consecutive in the step).
  std::vector<GenerationRequest*> requests;
  std::vector<StepRows> rows_of;
  const Clock::time_point now = Clock::now();
  for (size_t i = 0; i < out.sequences.size(); ++i) {
    const scheduler::ScheduledSequence& s = out.sequences[i];
    if (requests.empty() || requests.back()->id != s.request) {
      auto& g = static_cast<GenerationRequest&>(*active.at(s.request));
      if (!g.first_scheduled) g.first_scheduled = now;
      requests.push_back(&g);
      rows_of.push_back({&s, 0, static_cast<int64_t>(i)});
    }
    ++rows_of.back().count;
  }
  size_t owner = 0;  // index into `requests` of the sequence being built
  const std::vector<DecoderInput> inputs =
      BuildInputs(out, [&](const scheduler::ScheduledSequence& s) {
        while (requests[owner]->id != s.request) ++owner;
        const GenerationTask& task = *requests[owner]->task;
        return SequenceSource{&task.first_step(), &task.Generated(s.id), image_token};
      });
  const double inputs_ms = clock.Lap();

  at::Tensor logits;
  try {
    logits = runner->Run(out, inputs);
  } catch (const std::exception& e) {
    const absl::Status status = StatusFromException(e, "decoder step");
    for (GenerationRequest* g : requests) {
      const int64_t id = g->id;
      sched->Abort(id);
      Fail(id, status);
    }
    return;
  }
  const double forward_ms = clock.Lap();

  // The batched sampler for every single and sampled sequence; beam search per request.
  std::vector<SampleRow> rows;
  rows.reserve(out.sequences.size());
  std::vector<std::pair<GenerationTask*, size_t>> firsts;  // task, its first row
  for (size_t r = 0; r < requests.size(); ++r) {
    GenerationTask& task = *requests[r]->task;
    if (task.is_beam_search()) {
      task.BeamStep(logits, rows_of[r]);
      continue;
    }
    firsts.emplace_back(&task, rows.size());
    task.AppendSampleRows(rows_of[r], &rows);
  }
  std::vector<TokenLogprob> logprobs;  // one per row; empty unless its request asked
  const std::vector<int64_t> tokens = SampleTokens(logits, rows, &logprobs);
  const double sample_ms = clock.Lap();

  for (const auto& [task, first] : firsts) task->TakeTokens(tokens.data() + first, logprobs.data() + first);
  const Clock::time_point produced = Clock::now();
  for (GenerationRequest* g : requests) {
    if (!g->first_token && g->task->produced_any()) {
      g->first_token = produced;
      g->sink->OnStarted();
    }
  }
  sched->Update(out, {});
  std::vector<int64_t> done;
  for (GenerationRequest* g : requests) {
    if (g->task->Reconcile(*sched, [this] { return NewId(); })) done.push_back(g->id);
  }
  for (int64_t id : done) Finish(id, /*cancelled=*/false);
  UpdateGauges();  // KV blocks and queue lengths move every step
  const double emit_ms = clock.Lap();
  std::lock_guard<std::mutex> lock(mu);
  ++stats.steps;
  stats.generated_tokens += static_cast<int64_t>(out.sequences.size());
  stats.block_copies += static_cast<int64_t>(out.block_copies.size());
  stats.step_schedule_ms += schedule_ms;
  stats.step_inputs_ms += inputs_ms;
  stats.step_forward_ms += forward_ms;
  stats.step_sample_ms += sample_ms;
  stats.step_emit_ms += emit_ms;
}

void Engine::Impl::Finish(int64_t id, bool cancelled) {
  auto it = active.find(id);
  if (it == active.end()) return;
  if (it->second->kind != Request::Kind::kGeneration) {
    Fail(id, absl::CancelledError("the request was cancelled"));
    return;
  }
  auto& g = static_cast<GenerationRequest&>(*it->second);
  CaptionResult result;
  if (g.task) {
    g.task->FlushText();
    result = g.task->Result(cancelled);
  } else {  // cancelled before its image was ready
    result.prompt_tokens = static_cast<int64_t>(g.input_ids.size());
    result.sequences.push_back({{}, "", FinishReason::kCancelled});
  }
  sched->Abort(id);
  const std::shared_ptr<RequestSink> sink = g.sink;
  const bool streamed = g.task && g.task->width() == 1 && !g.task->is_beam_search();
  const Clock::time_point now = Clock::now();
  Usage usage;
  usage.prompt_tokens = static_cast<int64_t>(g.input_ids.size());
  for (const GeneratedSequence& s : result.sequences) usage.completion_tokens += static_cast<int64_t>(s.token_ids.size());
  usage.queue_ms = Ms(g.submitted, g.first_scheduled.value_or(now));
  usage.time_to_first_token_ms = g.first_token ? Ms(g.submitted, *g.first_token) : 0;
  usage.total_ms = Ms(g.submitted, now);
  Count(&EngineStats::finished);
  Release(id);
  UpdateGauges();
  if (sink && !streamed && !result.sequences.empty() && !result.sequences[0].text.empty()) {
    sink->OnText(result.sequences[0].text);
  }
  if (sink) sink->OnFinished(result, usage);
}

void Engine::Impl::Fail(int64_t id, const absl::Status& status) {
  auto it = active.find(id);
  if (it == active.end()) return;
  const std::shared_ptr<RequestSink> sink = it->second->sink;
  Count(&EngineStats::failed);
  sched->Abort(id);
  Release(id);
  UpdateGauges();
  if (sink) sink->OnError(status);
}

void Engine::Impl::Release(int64_t id) {
  auto it = active.find(id);
  if (it == active.end()) return;
  Request& r = *it->second;
  if (r.pinned) r.room->images->Unpin(r.image_key);
  r.room->vision->Remove(id);
  retrieval_queue.erase(std::remove(retrieval_queue.begin(), retrieval_queue.end(), id), retrieval_queue.end());
  active.erase(it);
}

}  // namespace blip2::engine
