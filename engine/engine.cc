#include "engine/engine.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <limits>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "engine/blip2_model.h"
#include "engine/generator.h"
#include "engine/image_cache.h"
#include "engine/logits_processors.h"
#include "engine/retrieval_batch.h"
#include "engine/text_streamer.h"
#include "engine/tokenizer/unicode.h"
#include "engine/tokenizer/wordpiece_tokenizer.h"
#include "engine/torch_util.h"
#include "scheduler/scheduler.h"

namespace blip2::engine {
namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

// One request on the engine thread.
struct Active {
  int64_t id = 0;
  EngineRequest request;
  std::shared_ptr<RequestSink> sink;
  GenerationParams params;
  std::vector<int64_t> input_ids;  // the prompt as the model sees it (T5: the encoder's input)
  // The first decoder step once the image is encoded: OPT, input_ids with the
  // image embeddings; T5, the start token with the cross-attention keys and
  // values. Its token ids begin the history the logits processors see.
  DecoderInput first_step;
  uint64_t image_key = 0;
  at::Tensor embeds;  // [Q, D] once the image is encoded (pinned in the cache)
  bool batched = true;  // continuous batching; false: the whole generator between steps
  bool register_only = false;  // RegisterImage: encode and pin, no generation
  bool retrieve = false;       // SubmitRetrieval: `job` once the image (if any) is ready
  bool has_image = true;       // false: a texts-only retrieval request
  bool pinned = false;         // holds a pin on its image's cache entry
  RetrievalJob job;
  std::vector<int64_t> generated;
  std::optional<at::Generator> rng;
  std::unique_ptr<TextStreamer> streamer;
  Clock::time_point submitted, first_scheduled, first_token;
  bool scheduled = false;
};

}  // namespace

struct Engine::Impl {
  EngineConfig config;
  std::unique_ptr<Blip2Model> model;
  std::unique_ptr<WordPieceTokenizer> text_tokenizer;  // retrieval checkpoints
  int64_t max_text_tokens = 0;
  int64_t kv_blocks = 0;

  // Shared with submitting threads, under `mu`.
  mutable std::mutex mu;
  std::condition_variable wake;
  std::deque<std::unique_ptr<Active>> inbox;
  std::vector<int64_t> cancels;
  std::set<uint64_t> registered;       // image keys registered and not released
  std::vector<uint64_t> releases;      // released keys, for the engine thread to unpin
  bool accepting = true;
  bool stopping = false;
  Clock::time_point stop_deadline;
  int64_t next_id = 1;
  EngineStats stats;
  std::thread thread;

  // Engine thread only.
  std::map<int64_t, std::unique_ptr<Active>> active;
  std::deque<int64_t> vision_queue;  // waiting for their image
  std::deque<int64_t> offline_queue; // image ready, to run through the whole generator
  std::deque<int64_t> retrieval_queue;  // image ready (or none needed), to run in the next text batch
  std::unique_ptr<scheduler::Scheduler> sched;
  std::optional<KvCache> kv;
  std::unique_ptr<ImageCache> images;
  std::set<uint64_t> registration_pins;  // keys holding one registration pin

  void Loop();
  absl::StatusOr<int64_t> Enqueue(std::unique_ptr<Active> a);
  void TakeInbox(std::vector<std::unique_ptr<Active>>* added, std::vector<int64_t>* cancelled,
                 std::vector<uint64_t>* released, bool* stop_now);
  void FinishRegistration(Active& a);
  absl::Status AllocateKvCache();
  void Admit(const std::vector<int64_t>& ids);
  void Route(Active& a);
  void RunVision(bool force);
  void RunOffline();
  void RunRetrievalQueue();
  void RunStep();
  void Finish(int64_t id, const std::string& reason);
  void Fail(int64_t id, const absl::Status& status);
  void Release(int64_t id);
  CaptionResult Result(const Active& a, const std::vector<int64_t>& tokens, const std::string& reason) const;
  bool HasWork() const { return !active.empty(); }
  // Queue and cache gauges, refreshed before every terminal event so a caller
  // woken by one sees them current.
  void UpdateGauges() {
    std::lock_guard<std::mutex> lock(mu);
    stats.waiting = sched->num_waiting() +
                    static_cast<int64_t>(vision_queue.size() + offline_queue.size() + retrieval_queue.size());
    stats.running = sched->num_running();
    stats.kv_blocks_used = sched->num_used_blocks();
    stats.image_cache_bytes = images->bytes();
    stats.image_cache_entries = images->size();
    stats.registered_images = static_cast<int64_t>(registration_pins.size());
  }
  void Count(int64_t EngineStats::*field, int64_t n = 1) {
    std::lock_guard<std::mutex> lock(mu);
    stats.*field += n;
  }
};

uint64_t ImageContentKey(const std::vector<float>& pixels) { return ImageKey(pixels.data(), pixels.size()); }

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Engine::~Engine() { Shutdown(std::chrono::milliseconds(0)); }

absl::StatusOr<std::unique_ptr<Engine>> Engine::Start(const EngineOptions& options, const EngineConfig& config) {
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  if (config.intra_op_threads > 0) at::set_num_threads(static_cast<int>(config.intra_op_threads));
  ASSIGN_OR_RETURN(const ModelSpec spec, LoadModelSpec(options.model_dir));
  const bool retrieval = spec.config.is_retrieval();
  ASSIGN_OR_RETURN(impl->model, Blip2Model::Load(options, /*with_language_model=*/!retrieval));
  if (retrieval) {
    if (!impl->model->retrieval) {
      return absl::InvalidArgumentError(absl::StrCat(options.model_dir, ": a retrieval checkpoint without text weights "
                                                     "(qformer_config.use_qformer_text_input is false)"));
    }
    ASSIGN_OR_RETURN(impl->text_tokenizer, WordPieceTokenizer::Load(options.model_dir));
    const int64_t positions = impl->model->retrieval->max_text_length();
    impl->max_text_tokens = config.max_text_tokens > 0 ? std::min(config.max_text_tokens, positions) : positions;
  }
  // A retrieval engine has no language model and so no KV cache.
  if (!retrieval) RETURN_IF_ERROR(impl->AllocateKvCache());
  scheduler::SchedulerConfig sc;
  sc.block_size = config.kv_block_size;
  sc.num_blocks = impl->kv_blocks;
  sc.max_num_seqs = config.max_num_seqs;
  sc.max_batched_tokens = config.max_batched_tokens;
  sc.watermark = config.kv_watermark;
  impl->sched = std::make_unique<scheduler::Scheduler>(sc);
  impl->images = std::make_unique<ImageCache>(config.image_cache_bytes);
  impl->stats.kv_blocks_total = impl->kv_blocks;
  common::LogInfo("engine", absl::StrCat("KV cache: ", impl->kv_blocks, " blocks of ", config.kv_block_size,
                                         " tokens; max ", config.max_num_seqs, " sequences, ",
                                         config.max_batched_tokens, " tokens per step; ", at::get_num_threads(),
                                         " intra-op threads"));
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->Loop(); });
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

// Sizes and allocates the paged KV cache: a block count, or a byte budget.
absl::Status Engine::Impl::AllocateKvCache() {
  try {
    c10::InferenceMode guard;
    const TextDecoder& decoder = model->decoder();
    KvCache probe = decoder.MakeCache(1, config.kv_block_size);
    // Never more than max_num_seqs sequences of the longest possible length can use.
    const int64_t useful =
        config.max_num_seqs *
        scheduler::BlocksFor(model->MaxDecoderTokens(config.limits.max_new_tokens), config.kv_block_size);
    kv_blocks = config.kv_blocks > 0 ? config.kv_blocks
                                     : std::min(useful, config.kv_cache_bytes / probe.bytes_per_block());
    if (kv_blocks <= 0) return absl::InvalidArgumentError("KV cache budget holds no block");
    kv.emplace(decoder.MakeCache(kv_blocks, config.kv_block_size));
  } catch (const std::exception& e) {
    return StatusFromException(e, "allocating the KV cache");
  }
  return absl::OkStatus();
}

const ModelSpec& Engine::spec() const { return impl_->model->spec; }

const GenerationLimits& Engine::limits() const { return impl_->config.limits; }

std::vector<int64_t> Engine::pixel_shape() const {
  const VisionConfig& v = spec().config.vision;
  return {v.num_channels, v.image_size, v.image_size};
}

bool Engine::serves_generation() const { return !impl_->model->spec.config.is_retrieval(); }
bool Engine::serves_retrieval() const { return impl_->model->retrieval.has_value(); }
int64_t Engine::max_text_tokens() const { return impl_->max_text_tokens; }

absl::StatusOr<int64_t> Engine::Submit(EngineRequest request, std::shared_ptr<RequestSink> sink) {
  Impl& m = *impl_;
  if (!serves_generation()) {
    return absl::FailedPreconditionError(absl::StrCat("the model ", spec().model_dir,
                                                      " is a retrieval checkpoint: it does not generate text"));
  }
  auto a = std::make_unique<Active>();
  ASSIGN_OR_RETURN(a->params, ResolveGenerationParams(spec().generation, request.overrides, m.config.limits));
  if (!request.image_key) RETURN_IF_ERROR(CheckPixels(request.pixels));
  ASSIGN_OR_RETURN(a->input_ids,
                   m.model->InputIds(request.prompt, m.config.max_prompt_tokens, a->params.max_new_tokens));
  // Decoder tokens: OPT's prompt or T5's start token, then the new ones.
  const int64_t decoder_prompt = m.model->is_t5() ? 1 : static_cast<int64_t>(a->input_ids.size());
  const int64_t total = decoder_prompt + a->params.max_new_tokens;
  a->batched = a->params.num_beams == 1 && a->params.num_return_sequences == 1;
  const scheduler::Fit fit = scheduler::FitOf(m.sched->config(), decoder_prompt, a->params.max_new_tokens);
  if (a->batched && fit == scheduler::Fit::kExceedsCache) {
    return absl::InvalidArgumentError(absl::StrCat("prompt plus max_new_tokens (", total, " tokens) needs more KV blocks than the cache has (",
                                                   m.kv_blocks, ")"));
  }
  if (a->batched && fit == scheduler::Fit::kExceedsStep) {
    return absl::InvalidArgumentError(absl::StrCat("prompt plus max_new_tokens (", total,
                                                   " tokens) exceeds what one step computes (max_batched_tokens ",
                                                   m.config.max_batched_tokens, ")"));
  }
  a->image_key = request.image_key ? *request.image_key : ImageKey(request.pixels.data(), request.pixels.size());
  a->sink = std::move(sink);
  a->request = std::move(request);
  if (a->params.do_sample) a->rng = at::detail::createCPUGenerator(a->params.seed);
  return m.Enqueue(std::move(a));
}

absl::StatusOr<int64_t> Engine::SubmitRetrieval(RetrievalRequest request, std::shared_ptr<RequestSink> sink) {
  Impl& m = *impl_;
  if (!serves_retrieval()) {
    return absl::FailedPreconditionError(absl::StrCat("the model ", spec().model_dir,
                                                      " is not a retrieval checkpoint: it cannot match or embed"));
  }
  auto a = std::make_unique<Active>();
  a->retrieve = true;
  a->has_image = request.image_key.has_value() || !request.pixels.empty();
  if (a->has_image && !request.image_key) RETURN_IF_ERROR(CheckPixels(request.pixels));
  if (!a->has_image && request.texts.empty()) return absl::InvalidArgumentError("give an image, texts or both");
  if (request.match && (!a->has_image || request.texts.empty())) {
    return absl::InvalidArgumentError(a->has_image ? "texts is empty: nothing to match the image against"
                                                   : "matching needs an image");
  }
  if (static_cast<int64_t>(request.texts.size()) > m.config.max_texts) {
    return absl::InvalidArgumentError(absl::StrCat(request.texts.size(), " texts; the limit is ", m.config.max_texts,
                                                   " (max_texts)"));
  }
  for (size_t i = 0; i < request.texts.size(); ++i) {
    if (!IsValidUtf8(request.texts[i])) return absl::InvalidArgumentError(absl::StrCat("texts[", i, "] is not valid UTF-8"));
    WordPieceTokenizer::Encoding e = m.text_tokenizer->Encode(request.texts[i], m.max_text_tokens);
    a->job.text_ids.push_back(std::move(e.ids));
    a->job.truncated.push_back(e.truncated);
  }
  a->job.match = request.match;
  a->job.features = request.features;
  if (a->has_image) {
    a->image_key = request.image_key ? *request.image_key : ImageKey(request.pixels.data(), request.pixels.size());
  }
  a->request.pixels = std::move(request.pixels);
  a->request.image_key = request.image_key;
  a->sink = std::move(sink);
  return m.Enqueue(std::move(a));
}

absl::Status Engine::CheckPixels(const std::vector<float>& pixels) const {
  const auto shape = pixel_shape();
  if (pixels.size() != static_cast<size_t>(shape[0] * shape[1] * shape[2])) {
    return absl::InvalidArgumentError(absl::StrCat("image has ", pixels.size(), " pixel values; expected ",
                                                   shape[0] * shape[1] * shape[2]));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Engine::RegisterImage(std::vector<float> pixels, std::shared_ptr<RequestSink> sink) {
  RETURN_IF_ERROR(CheckPixels(pixels));
  auto a = std::make_unique<Active>();
  a->register_only = true;
  a->image_key = ImageKey(pixels.data(), pixels.size());
  a->request.pixels = std::move(pixels);
  a->sink = std::move(sink);
  const uint64_t key = a->image_key;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (impl_->registered.count(key) == 0 &&
        static_cast<int64_t>(impl_->registered.size()) >= impl_->config.max_registered_images) {
      return absl::ResourceExhaustedError(absl::StrCat("already ", impl_->registered.size(),
                                                       " registered images (max_registered_images); release some"));
    }
  }
  RETURN_IF_ERROR(impl_->Enqueue(std::move(a)).status());
  return key;
}

absl::Status Engine::ReleaseImage(uint64_t key) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (impl_->registered.erase(key) == 0) return absl::NotFoundError("the image is not registered");
  impl_->releases.push_back(key);
  impl_->wake.notify_one();
  return absl::OkStatus();
}

// Queues a validated request; registrations also enter `registered` here, so a
// request naming the key may follow at once.
absl::StatusOr<int64_t> Engine::Impl::Enqueue(std::unique_ptr<Active> a) {
  a->submitted = Clock::now();
  std::lock_guard<std::mutex> lock(mu);
  if (!accepting) return absl::UnavailableError("the engine is shutting down");
  if (static_cast<int64_t>(inbox.size()) >= config.inbox_capacity) {
    return absl::ResourceExhaustedError(absl::StrCat("the engine's inbox is full (", config.inbox_capacity,
                                                     " requests); retry later"));
  }
  if (a->register_only) {
    registered.insert(a->image_key);
  } else if (a->request.image_key && registered.count(a->image_key) == 0) {
    return absl::NotFoundError("the image is not registered (RegisterImage it first)");
  }
  a->id = next_id++;
  const int64_t id = a->id;
  inbox.push_back(std::move(a));
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
  return impl_->stats;
}

void Engine::Impl::TakeInbox(std::vector<std::unique_ptr<Active>>* added, std::vector<int64_t>* cancelled,
                             std::vector<uint64_t>* released, bool* stop_now) {
  std::unique_lock<std::mutex> lock(mu);
  const bool vision_pending = !vision_queue.empty();
  if (inbox.empty() && cancels.empty() && releases.empty() && !HasWork() && !stopping) {
    wake.wait(lock, [&] { return !inbox.empty() || !cancels.empty() || !releases.empty() || stopping; });
  } else if (inbox.empty() && cancels.empty() && vision_pending && sched->num_running() + sched->num_waiting() == 0 &&
             offline_queue.empty()) {
    // Only images wait: give others a moment to join their batch.
    wake.wait_for(lock, config.vision_max_queue_delay, [&] { return !inbox.empty() || stopping; });
  }
  while (!inbox.empty()) {
    added->push_back(std::move(inbox.front()));
    inbox.pop_front();
  }
  cancelled->swap(cancels);
  released->swap(releases);
  *stop_now = stopping && Clock::now() >= stop_deadline;
}

void Engine::Impl::Loop() {
  c10::InferenceMode guard;
  while (true) {
    std::vector<std::unique_ptr<Active>> added;
    std::vector<int64_t> cancelled;
    std::vector<uint64_t> released;
    bool stop_now = false;
    TakeInbox(&added, &cancelled, &released, &stop_now);
    for (uint64_t key : released) {
      if (registration_pins.erase(key) > 0) images->Unpin(key);
    }
    if (!released.empty()) UpdateGauges();
    for (auto& a : added) {
      const int64_t id = a->id;
      const bool needs_image = a->has_image;
      active.emplace(id, std::move(a));
      (needs_image ? vision_queue : retrieval_queue).push_back(id);
    }
    for (int64_t id : cancelled) {
      if (active.count(id) == 0) continue;  // unknown or already finished: harmless
      if (active.at(id)->retrieve) {
        Fail(id, absl::CancelledError("the request was cancelled"));
      } else if (std::find(vision_queue.begin(), vision_queue.end(), id) != vision_queue.end() ||
                 std::find(offline_queue.begin(), offline_queue.end(), id) != offline_queue.end()) {
        Finish(id, "cancelled");
      } else {
        sched->Cancel(id);
      }
    }
    if (stop_now) {
      std::vector<int64_t> ids;
      for (const auto& [id, a] : active) ids.push_back(id);
      for (int64_t id : ids) Fail(id, absl::UnavailableError("the engine shut down before the request finished"));
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      if (stopping && active.empty() && inbox.empty()) return;
    }
    const bool llm_idle = sched->num_running() + sched->num_waiting() == 0 && offline_queue.empty();
    RunVision(/*force=*/!llm_idle ? false : true);
    RunRetrievalQueue();
    RunOffline();
    RunStep();
  }
}

void Engine::Impl::Route(Active& a) {
  if (!a.batched) {
    offline_queue.push_back(a.id);
    return;
  }
  scheduler::SequenceRequest r{a.id, static_cast<int64_t>(a.first_step.token_ids.size()), a.params.max_new_tokens,
                               a.request.priority, a.request.deadline};
  if (sched->Add(r) != scheduler::AddResult::kQueued) {
    Fail(a.id, absl::InternalError("the scheduler refused a request that Submit admitted"));
    return;
  }
  TextPieceSink piece;
  if (a.sink) {
    RequestSink* sink = a.sink.get();
    piece = [sink](const std::string& text) { sink->OnText(text); };
  }
  a.streamer = std::make_unique<TextStreamer>(*model->tokenizer, a.params.stop_strings, piece);
}

void Engine::Impl::RunVision(bool force) {
  if (vision_queue.empty()) return;
  // Requests whose image is cached go straight on; the rest wait for a batch.
  std::vector<uint64_t> missing;
  std::map<uint64_t, const std::vector<float>*> pixels_of;
  for (int64_t id : vision_queue) {
    Active& a = *active.at(id);
    if (images->Find(a.image_key) != nullptr || a.request.pixels.empty()) continue;
    if (pixels_of.emplace(a.image_key, &a.request.pixels).second) missing.push_back(a.image_key);
  }
  const auto oldest = active.at(vision_queue.front())->submitted;
  const bool full = static_cast<int64_t>(missing.size()) >= config.vision_max_batch;
  const bool waited = Clock::now() - oldest >= config.vision_max_queue_delay;
  if (!missing.empty() && (full || waited || force)) {
    missing.resize(std::min<size_t>(missing.size(), config.vision_max_batch));
    std::vector<const std::vector<float>*> batch;
    for (uint64_t key : missing) batch.push_back(pixels_of.at(key));
    try {
      const ImagePathOutput out = model->image_path->Forward(model->PixelBatch(batch));
      for (size_t i = 0; i < missing.size(); ++i) {
        const int64_t b = static_cast<int64_t>(i);
        CachedImage image;
        if (out.projected.defined()) {
          image.projected = out.projected[b];
        } else {  // retrieval: what ITC, ITM and Embed read
          image.image_embeds = out.image_embeds[b];
          image.vision_hidden = out.vision.last_hidden_state[b];
          image.qformer = out.qformer[b];
        }
        images->Insert(missing[i], std::move(image));
      }
      std::lock_guard<std::mutex> lock(mu);
      stats.images_encoded += static_cast<int64_t>(missing.size());
      ++stats.encoder_batches;
      ++stats.vision_batch_sizes[static_cast<int64_t>(missing.size())];
    } catch (const std::exception& e) {
      const absl::Status status = StatusFromException(e, "encoding images");
      std::vector<int64_t> failed;
      for (int64_t id : vision_queue) {
        if (std::find(missing.begin(), missing.end(), active.at(id)->image_key) != missing.end()) failed.push_back(id);
      }
      for (int64_t id : failed) Fail(id, status);
      return;
    }
  }
  std::deque<int64_t> still;
  std::vector<int64_t> ready;
  const std::deque<int64_t> queued = vision_queue;
  for (int64_t id : queued) {
    if (active.count(id) == 0) continue;  // failed while routing
    Active& a = *active.at(id);
    if (images->Find(a.image_key) == nullptr) {
      if (a.request.pixels.empty() && !pixels_of.count(a.image_key)) {
        // A registered image released (and evicted) before this request reached it.
        Fail(id, absl::NotFoundError("the image was released before the request started"));
      } else {
        still.push_back(id);
      }
      continue;
    }
    std::vector<float>().swap(a.request.pixels);  // encoded: the pixels are no longer needed
    // Every request but the one that brought a newly encoded image skipped the encoder.
    auto fresh = std::find(missing.begin(), missing.end(), a.image_key);
    if (fresh != missing.end()) {
      missing.erase(fresh);
    } else {
      Count(&EngineStats::image_cache_hits);
    }
    if (a.register_only) {
      FinishRegistration(a);
      continue;
    }
    const CachedImage& cached = *images->Find(a.image_key);
    images->Pin(a.image_key);
    a.pinned = true;
    if (a.retrieve) {
      a.job.image = cached;
      retrieval_queue.push_back(id);
      continue;
    }
    a.embeds = cached.projected;
    ready.push_back(id);
  }
  vision_queue.swap(still);
  Admit(ready);
}

// Requests whose image is ready get their first decoder step (for T5 one
// encoder forward over all of them), then join the scheduler or the offline queue.
void Engine::Impl::Admit(const std::vector<int64_t>& ids) {
  if (ids.empty()) return;
  std::vector<EncoderInput> prompts;
  for (int64_t id : ids) prompts.push_back({active.at(id)->input_ids, active.at(id)->embeds});
  std::vector<DecoderInput> steps;
  try {
    steps = model->FirstSteps(prompts);
  } catch (const std::exception& e) {
    const absl::Status status = StatusFromException(e, "encoding prompts");
    for (int64_t id : ids) Fail(id, status);
    return;
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    Active& a = *active.at(ids[i]);
    a.first_step = std::move(steps[i]);
    Route(a);
  }
}

void Engine::Impl::FinishRegistration(Active& a) {
  bool still_registered;
  {
    std::lock_guard<std::mutex> lock(mu);
    still_registered = registered.count(a.image_key) > 0;
  }
  // Released while it was being encoded: nothing to pin.
  if (still_registered && registration_pins.insert(a.image_key).second) images->Pin(a.image_key);
  Usage usage;
  usage.queue_ms = usage.total_ms = Ms(a.submitted, Clock::now());
  const std::shared_ptr<RequestSink> sink = a.sink;
  Count(&EngineStats::finished);
  Release(a.id);
  UpdateGauges();
  if (sink) sink->OnFinished(CaptionResult{}, usage);
}

CaptionResult Engine::Impl::Result(const Active& a, const std::vector<int64_t>& tokens,
                                   const std::string& reason) const {
  GeneratedSequence seq;
  seq.token_ids = tokens;
  seq.finish_reason = reason;
  std::vector<int64_t> text_ids = tokens;
  if (reason == "eos" && !text_ids.empty()) text_ids.pop_back();
  seq.text = model->tokenizer->Decode(text_ids, true).value_or("");
  if (const size_t stop = FindStop(seq.text, a.params.stop_strings); stop != std::string::npos) seq.text.resize(stop);
  CaptionResult result;
  result.prompt_tokens = static_cast<int64_t>(a.input_ids.size());
  result.sequences.push_back(std::move(seq));
  return result;
}

// Every retrieval request whose image is ready: their texts in one batch.
void Engine::Impl::RunRetrievalQueue() {
  if (retrieval_queue.empty()) return;
  const std::vector<int64_t> ids(retrieval_queue.begin(), retrieval_queue.end());
  retrieval_queue.clear();
  std::vector<RetrievalJob> jobs;
  for (int64_t id : ids) jobs.push_back(active.at(id)->job);
  std::vector<RetrievalResult> results;
  try {
    results = RunRetrieval(*model, jobs, text_tokenizer->pad_id());
  } catch (const std::exception& e) {
    const absl::Status status = StatusFromException(e, "retrieval");
    for (int64_t id : ids) Fail(id, status);
    return;
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    Active& a = *active.at(ids[i]);
    Usage usage;
    for (const auto& text : a.job.text_ids) usage.prompt_tokens += static_cast<int64_t>(text.size());
    usage.queue_ms = usage.time_to_first_token_ms = usage.total_ms = Ms(a.submitted, Clock::now());
    const std::shared_ptr<RequestSink> sink = a.sink;
    Count(&EngineStats::finished);
    Release(ids[i]);
    UpdateGauges();
    if (sink) sink->OnRetrieved(results[i], usage);
  }
}

void Engine::Impl::RunOffline() {
  while (!offline_queue.empty()) {
    const int64_t id = offline_queue.front();
    offline_queue.pop_front();
    Active& a = *active.at(id);
    a.first_scheduled = Clock::now();
    a.scheduled = true;
    try {
      const std::vector<Hypothesis> hyps = Generate(model->decoder(), a.first_step, a.params);
      CaptionResult result;
      result.prompt_tokens = static_cast<int64_t>(a.input_ids.size());
      static const char* kReasons[] = {"eos", "length", "stop_string"};
      int64_t tokens = 0;
      for (const Hypothesis& h : hyps) {
        CaptionResult one = Result(a, h.tokens, kReasons[static_cast<int>(h.reason)]);
        result.sequences.push_back(std::move(one.sequences[0]));
        tokens += static_cast<int64_t>(h.tokens.size());
      }
      Usage usage;
      usage.prompt_tokens = result.prompt_tokens;
      usage.completion_tokens = tokens;
      Count(&EngineStats::generated_tokens, tokens);
      usage.queue_ms = Ms(a.submitted, a.first_scheduled);
      usage.total_ms = Ms(a.submitted, Clock::now());
      usage.time_to_first_token_ms = usage.total_ms;
      const std::shared_ptr<RequestSink> sink = a.sink;
      Count(&EngineStats::finished);
      Release(id);
      UpdateGauges();
      if (sink && !result.sequences.empty()) sink->OnText(result.sequences[0].text);
      if (sink) sink->OnFinished(result, usage);
    } catch (const std::exception& e) {
      Fail(id, StatusFromException(e, "generating"));
    }
  }
}

void Engine::Impl::RunStep() {
  if (sched->num_running() + sched->num_waiting() == 0) return;
  const scheduler::SchedulerOutput out = sched->Schedule(Clock::now());
  for (int64_t id : out.expired) Fail(id, absl::DeadlineExceededError("the request's deadline passed"));
  for (int64_t id : out.cancelled) Finish(id, "cancelled");
  if (!out.preempted.empty()) Count(&EngineStats::preemptions, static_cast<int64_t>(out.preempted.size()));
  if (out.sequences.empty()) return;
  std::vector<DecoderInput> inputs;
  const Clock::time_point now = Clock::now();
  for (const scheduler::ScheduledSequence& s : out.sequences) {
    Active& a = *active.at(s.id);
    if (!a.scheduled) {
      a.scheduled = true;
      a.first_scheduled = now;
    }
    DecoderInput in;
    in.blocks = s.block_table;
    in.cached = s.cached_tokens;
    in.cross = a.first_step.cross;
    if (s.is_prefill) {  // the first step, plus what it had generated before a preemption
      in.token_ids = a.first_step.token_ids;
      in.token_ids.insert(in.token_ids.end(), a.generated.begin(), a.generated.end());
      in.image_embeds = a.first_step.image_embeds;
    } else {
      in.token_ids = {a.generated.back()};
    }
    inputs.push_back(std::move(in));
  }
  at::Tensor logits;
  try {
    logits = model->decoder().Step(inputs, *kv);
  } catch (const std::exception& e) {
    const absl::Status status = StatusFromException(e, "decoder step");
    for (const scheduler::ScheduledSequence& s : out.sequences) {
      sched->Abort(s.id);
      Fail(s.id, status);
    }
    return;
  }
  Count(&EngineStats::steps);
  std::vector<int64_t> finished;
  std::map<int64_t, std::string> reasons;
  // Greedy rows whose only processor is min_new_tokens get their stop ids
  // masked in one operation and share one batched argmax; the rest (sampling,
  // penalties) go row by row.
  std::vector<int64_t> mask_rows, mask_ids;
  std::vector<bool> plain(out.sequences.size());
  for (size_t i = 0; i < out.sequences.size(); ++i) {
    const Active& a = *active.at(out.sequences[i].id);
    const GenerationParams& p = a.params;
    plain[i] = !p.do_sample && p.repetition_penalty == 1.0 && p.no_repeat_ngram_size == 0;
    if (plain[i] && static_cast<int64_t>(a.generated.size()) < p.min_new_tokens) {
      for (int64_t eos : p.eos_token_ids) {
        if (eos < 0 || eos >= logits.size(1)) continue;
        mask_rows.push_back(static_cast<int64_t>(i));
        mask_ids.push_back(eos);
      }
    }
  }
  if (!mask_rows.empty()) {
    logits.index_put_({at::tensor(mask_rows, at::kLong).to(logits.device()),
                       at::tensor(mask_ids, at::kLong).to(logits.device())},
                      at::scalar_tensor(-std::numeric_limits<float>::infinity(), logits.options()));
  }
  const at::Tensor argmax = logits.argmax(-1).to(at::kCPU).contiguous();
  for (size_t i = 0; i < out.sequences.size(); ++i) {
    Active& a = *active.at(out.sequences[i].id);
    const GenerationParams& p = a.params;
    int64_t token = argmax.data_ptr<int64_t>()[i];
    if (!plain[i]) {
      at::Tensor scores = logits[static_cast<int64_t>(i)].clone();
      std::vector<int64_t> history = a.first_step.token_ids;
      history.insert(history.end(), a.generated.begin(), a.generated.end());
      ProcessScores(scores, history, static_cast<int64_t>(a.generated.size()), p, 1);
      token = p.do_sample ? at::multinomial(scores.softmax(0).to(at::kCPU), 1, false, *a.rng).item<int64_t>()
                          : scores.argmax().item<int64_t>();
    }
    if (a.generated.empty()) a.first_token = Clock::now();
    a.generated.push_back(token);
    if (a.sink) a.sink->OnToken(token);
    const bool eos = std::find(a.params.eos_token_ids.begin(), a.params.eos_token_ids.end(), token) !=
                     a.params.eos_token_ids.end();
    if (eos) {
      finished.push_back(a.id);
      reasons[a.id] = "eos";
    } else if (a.streamer->Push(token)) {
      finished.push_back(a.id);
      reasons[a.id] = "stop_string";
    }
  }
  Count(&EngineStats::generated_tokens, static_cast<int64_t>(out.sequences.size()));
  for (int64_t id : sched->Update(out, finished)) {
    Finish(id, reasons.count(id) > 0 ? reasons[id] : "length");
  }
  UpdateGauges();  // KV blocks and queue lengths move every step
}

void Engine::Impl::Finish(int64_t id, const std::string& reason) {
  auto it = active.find(id);
  if (it == active.end()) return;
  Active& a = *it->second;
  if (a.streamer) a.streamer->Finish();
  const CaptionResult result = Result(a, a.generated, reason);
  const std::shared_ptr<RequestSink> sink = a.sink;
  const Clock::time_point now = Clock::now();
  Usage usage;
  usage.prompt_tokens = static_cast<int64_t>(a.input_ids.size());
  usage.completion_tokens = static_cast<int64_t>(a.generated.size());
  usage.queue_ms = a.scheduled ? Ms(a.submitted, a.first_scheduled) : Ms(a.submitted, now);
  usage.time_to_first_token_ms = a.generated.empty() ? 0 : Ms(a.submitted, a.first_token);
  usage.total_ms = Ms(a.submitted, now);
  Count(&EngineStats::finished);
  Release(id);
  UpdateGauges();
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
  if (it->second->pinned) images->Unpin(it->second->image_key);
  vision_queue.erase(std::remove(vision_queue.begin(), vision_queue.end(), id), vision_queue.end());
  offline_queue.erase(std::remove(offline_queue.begin(), offline_queue.end(), id), offline_queue.end());
  retrieval_queue.erase(std::remove(retrieval_queue.begin(), retrieval_queue.end(), id), retrieval_queue.end());
  active.erase(it);
}

}  // namespace blip2::engine
