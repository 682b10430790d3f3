// The serving engine with the tiny OPT fixture (and the tiny Flan-T5 one for
// batching): concurrent requests get exactly the ids they get alone (also
// under preemption), images are encoded once, cancellation frees the KV cache,
// and faults end requests cleanly.
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <cstring>
#include <mutex>
#include <optional>
#include <chrono>
#include <thread>

#include <nlohmann/json.hpp>

#include "engine/generation/captioner.h"
#include "engine/runtime/engine.h"
#include "engine/model/safetensors.h"
#include "tests/catch.h"
#include "tests/test_support.h"

namespace blip2::engine {
namespace {

std::string Model() { return testing::FixturesDir() + "/blip2-tiny-opt"; }
std::string T5Model() { return testing::FixturesDir() + "/blip2-tiny-flan-t5"; }

std::vector<float> Pixels(const std::string& image) { return testing::FixturePixels(Model(), image); }

// Collects one request's events; Wait() blocks until the terminal one.
class Collector : public RequestSink {
 public:
  void OnToken(int64_t token, const TokenLogprob* logprob) override {
    std::lock_guard<std::mutex> lock(mu_);
    tokens_.push_back(token);
    if (logprob != nullptr) logprobs_.push_back(*logprob);
  }
  std::vector<int64_t> tokens() {
    std::lock_guard<std::mutex> lock(mu_);
    return tokens_;
  }
  std::vector<TokenLogprob> streamed_logprobs() {
    std::lock_guard<std::mutex> lock(mu_);
    return logprobs_;
  }
  void OnText(const std::string& text) override {
    std::unique_lock<std::mutex> lock(mu_);
    text_ += text;
    ++pieces_;
    cv_.notify_all();
    if (block_) cv_.wait(lock, [&] { return !block_; });
  }
  void OnFinished(const CaptionResult& result, const Usage& usage) override {
    std::lock_guard<std::mutex> lock(mu_);
    result_ = result;
    usage_ = usage;
    ++terminal_;
    cv_.notify_all();
  }
  void OnError(const absl::Status& status) override {
    std::lock_guard<std::mutex> lock(mu_);
    error_ = status;
    ++terminal_;
    cv_.notify_all();
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return terminal_ > 0; });
  }
  void WaitForText() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return pieces_ > 0 || terminal_ > 0; });
  }
  void Block(bool on) {
    std::lock_guard<std::mutex> lock(mu_);
    block_ = on;
    cv_.notify_all();
  }
  std::optional<CaptionResult> result() {
    std::lock_guard<std::mutex> lock(mu_);
    return result_;
  }
  absl::Status error() {
    std::lock_guard<std::mutex> lock(mu_);
    return error_;
  }
  int terminal() {
    std::lock_guard<std::mutex> lock(mu_);
    return terminal_;
  }
  std::string text() {
    std::lock_guard<std::mutex> lock(mu_);
    return text_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::string text_;
  int pieces_ = 0;
  bool block_ = false;
  std::optional<CaptionResult> result_;
  Usage usage_;
  absl::Status error_;
  int terminal_ = 0;
  std::vector<int64_t> tokens_;
  std::vector<TokenLogprob> logprobs_;
};

// A varied mix of requests: images, prompts, lengths and decoding options.
std::vector<CaptionRequest> Mix(int n) {
  const std::vector<std::string> images = {"chelsea", "coffee", "astronaut", "camera_gray"};
  const std::vector<std::string> prompts = {"", "Question: what animal is this? Answer:", "a photo of"};
  std::vector<CaptionRequest> mix;
  for (int i = 0; i < n; ++i) {
    CaptionRequest r;
    r.pixels = Pixels(images[i % images.size()]);
    r.prompt = prompts[i % prompts.size()];
    r.overrides.max_new_tokens = 3 + (i * 7) % 14;
    switch (i % 6) {
      case 1: r.overrides.temperature = 0.9; r.overrides.seed = 100 + i; break;
      case 2: r.overrides.repetition_penalty = 1.5; break;
      case 3: r.overrides.no_repeat_ngram_size = 2; r.overrides.min_new_tokens = 2; break;
      case 4: r.overrides.top_k = 5; r.overrides.top_p = 0.8; r.overrides.seed = 7; break;
      case 5: if (i % 12 == 5) r.overrides.num_beams = 3; break;  // a beam request now and then
    }
    mix.push_back(std::move(r));
  }
  return mix;
}

// Submits `n` requests of Mix (request i with priority `priority(i)`) at once,
// staggered a little, and checks each against the same request run alone.
void ExpectSameAsAlone(const EngineConfig& config, int n, const std::string& model = Model(),
                       const std::function<int(int)>& priority = [](int) { return 0; }) {
  auto alone = Captioner::Load({model});
  REQUIRE(alone.ok());
  const std::vector<CaptionRequest> mix = Mix(n);
  std::vector<std::vector<int64_t>> expected;
  for (const CaptionRequest& r : mix) expected.push_back((*alone)->Generate(r)->sequences[0].token_ids);

  auto engine = Engine::Start({model}, config);
  REQUIRE(engine.ok());
  std::vector<std::shared_ptr<Collector>> sinks;
  for (int i = 0; i < n; ++i) {
    if (i % 5 == 4) std::this_thread::sleep_for(std::chrono::milliseconds(2));  // staggered arrivals
    auto sink = std::make_shared<Collector>();
    EngineRequest req{mix[i].pixels, mix[i].prompt, mix[i].overrides, priority(i), std::nullopt};
    const auto submitted = (*engine)->Submit(std::move(req), sink);
    INFO(submitted.status().ToString());
    REQUIRE(submitted.ok());
    sinks.push_back(sink);
  }
  for (int i = 0; i < n; ++i) {
    sinks[i]->Wait();
    INFO("request " << i);
    REQUIRE(sinks[i]->result().has_value());
    CHECK(sinks[i]->result()->sequences[0].token_ids == expected[i]);
    if (!mix[i].overrides.num_beams) {
      CHECK(sinks[i]->text() == sinks[i]->result()->sequences[0].text);
      CHECK(sinks[i]->tokens() == expected[i]);  // streamed ids
    }
  }
  const EngineStats stats = (*engine)->Stats();
  CHECK(stats.finished == n);
  CHECK(stats.kv_blocks_used == 0);
  if (config.kv_blocks > 0 && config.kv_blocks * config.kv_block_size <= 96) CHECK(stats.preemptions > 0);
  std::printf("ENGINE %s: %d requests, %lld preemptions\n", model.c_str(), n, static_cast<long long>(stats.preemptions));
}

TEST_CASE("engine: 30 concurrent requests produce exactly the ids they produce alone") {
  ExpectSameAsAlone(EngineConfig{}, 30);
}

TEST_CASE("engine: the same under forced preemption (a tiny KV cache)") {
  EngineConfig tight;
  tight.kv_block_size = 4;
  tight.kv_blocks = 18;  // 72 positions: a few sequences at a time (a 3-beam request needs 18 blocks)
  tight.kv_watermark = 0;
  ExpectSameAsAlone(tight, 24);
}

// Mixed priorities under a KV budget that forces preemptions: a less urgent
// sequence admitted before a more urgent one must never be preempted after it
// was put in a step (it once decoded over blocks it no longer owned). Three
// priority classes interleaved, so every kind of victim occurs.
TEST_CASE("engine: mixed priorities under forced preemption produce exactly the ids they produce alone") {
  EngineConfig tight;
  tight.kv_block_size = 1;  // every decode needs a block: the most preemption decisions
  tight.kv_blocks = 72;     // what a 3-beam request of 24 tokens needs
  tight.kv_watermark = 0;
  ExpectSameAsAlone(tight, 48, Model(), [](int i) { return 2 - i % 3; });
}

TEST_CASE("engine: T5, mixed priorities under forced preemption produce exactly the ids they produce alone") {
  EngineConfig tight;
  tight.kv_block_size = 1;
  tight.kv_blocks = 33;  // what a 3-beam request of 11 decoder tokens needs
  tight.kv_watermark = 0;
  ExpectSameAsAlone(tight, 36, T5Model(), [](int i) { return 2 - i % 3; });
}

// T5: the encoder runs once per request (batched with the others admitted in
// the same iteration), then the decoder steps join the same continuous batch.
TEST_CASE("engine: T5, 30 staggered concurrent requests produce exactly the ids they produce alone") {
  ExpectSameAsAlone(EngineConfig{}, 30, T5Model());
}

TEST_CASE("engine: T5 under forced preemption (re-prefill of the start token and the generated ids)") {
  EngineConfig tight;
  tight.kv_block_size = 4;
  tight.kv_blocks = 10;
  tight.kv_watermark = 0;
  ExpectSameAsAlone(tight, 24, T5Model());
}



TEST_CASE("engine: many requests on one image run the encoder once") {
  auto engine = Engine::Start({Model()});
  REQUIRE(engine.ok());
  std::vector<std::shared_ptr<Collector>> sinks;
  for (int i = 0; i < 12; ++i) {
    auto sink = std::make_shared<Collector>();
    EngineRequest req{Pixels("coffee"), "", {}, 0, std::nullopt};
    req.overrides.max_new_tokens = 4;
    const auto submitted = (*engine)->Submit(std::move(req), sink);
    INFO(submitted.status().ToString());
    REQUIRE(submitted.ok());
    sinks.push_back(sink);
  }
  for (auto& s : sinks) s->Wait();
  const EngineStats stats = (*engine)->Stats();
  CHECK(stats.images_encoded == 1);
  CHECK(stats.image_cache_hits == 11);
  // Idle time counts a wait still going on: a snapshot taken while the engine
  // waits has it, and a later one more (it used to be added only at wake-up).
  const auto waited_since = std::chrono::steady_clock::now();
  double idle = (*engine)->Stats().idle_ms;
  while (idle <= stats.idle_ms && std::chrono::steady_clock::now() - waited_since < std::chrono::seconds(10)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    idle = (*engine)->Stats().idle_ms;
  }
  CHECK(idle > stats.idle_ms);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CHECK((*engine)->Stats().idle_ms > idle);
}

TEST_CASE("engine: a registered image is encoded once, pinned until released, then unknown") {
  EngineConfig config;
  config.image_cache_bytes = 1;  // nothing unpinned survives: only the registration keeps it
  config.max_registered_images = 1;
  auto engine = Engine::Start({Model()}, config);
  REQUIRE(engine.ok());
  auto registered = std::make_shared<Collector>();
  auto key = (*engine)->RegisterImage(Pixels("chelsea"), registered);
  REQUIRE(key.ok());
  CHECK(*key == ImageContentKey(Pixels("chelsea")));
  // A request naming the key may follow at once, before the encoding is done.
  auto by_key = std::make_shared<Collector>();
  EngineRequest req{{}, "", {}, 0, std::nullopt};
  req.image_key = *key;
  req.overrides.max_new_tokens = 5;
  REQUIRE((*engine)->Submit(req, by_key).ok());
  registered->Wait();
  by_key->Wait();
  REQUIRE(registered->error().ok());
  REQUIRE(by_key->result().has_value());
  // The same ids as sending the pixels.
  auto by_pixels = std::make_shared<Collector>();
  EngineRequest with_pixels{Pixels("chelsea"), "", {}, 0, std::nullopt};
  with_pixels.overrides.max_new_tokens = 5;
  REQUIRE((*engine)->Submit(std::move(with_pixels), by_pixels).ok());
  by_pixels->Wait();
  CHECK(by_key->result()->sequences[0].token_ids == by_pixels->result()->sequences[0].token_ids);
  CHECK((*engine)->Stats().images_encoded == 1);
  CHECK((*engine)->Stats().registered_images == 1);
  // One registration at a time; a second image is refused.
  auto other = (*engine)->RegisterImage(Pixels("coffee"), std::make_shared<Collector>());
  CHECK(absl::IsResourceExhausted(other.status()));

  // Registrations are counted: a second registration of the same picture
  // holds it through the first one's release.
  REQUIRE((*engine)->RegisterImage(Pixels("chelsea"), std::make_shared<Collector>()).ok());
  CHECK((*engine)->Stats().image_registrations == 2);
  REQUIRE((*engine)->ReleaseImage(*key).ok());
  auto still = std::make_shared<Collector>();
  REQUIRE((*engine)->Submit(req, still).ok());
  still->Wait();
  CHECK(still->result().has_value());
  REQUIRE((*engine)->ReleaseImage(*key).ok());
  CHECK(absl::IsNotFound((*engine)->ReleaseImage(*key)));
  CHECK(absl::IsNotFound((*engine)->Submit(req, std::make_shared<Collector>()).status()));
  // A request with the pixels still works after the release.
  auto again = std::make_shared<Collector>();
  EngineRequest pixels_again{Pixels("chelsea"), "", {}, 0, std::nullopt};
  REQUIRE((*engine)->Submit(std::move(pixels_again), again).ok());
  again->Wait();
  CHECK(again->result().has_value());
}

TEST_CASE("engine: an unreleased registration lapses after its lease, freeing its slot and its pin") {
  EngineConfig config;
  config.max_registered_images = 1;
  config.max_registration_ttl = std::chrono::seconds(5);
  config.registration_ttl = std::chrono::seconds(5);
  auto engine = Engine::Start({Model()}, config);
  REQUIRE(engine.ok());
  CHECK(absl::IsInvalidArgument(
      (*engine)->RegisterImage(Pixels("chelsea"), std::make_shared<Collector>(), std::chrono::seconds(6)).status()));
  CHECK(absl::IsInvalidArgument(
      (*engine)->RegisterImage(Pixels("chelsea"), std::make_shared<Collector>(), std::chrono::seconds(0)).status()));
  auto done = std::make_shared<Collector>();
  auto key = (*engine)->RegisterImage(Pixels("chelsea"), done, std::chrono::seconds(1));
  REQUIRE(key.ok());
  done->Wait();
  CHECK(absl::IsResourceExhausted(
      (*engine)->RegisterImage(Pixels("coffee"), std::make_shared<Collector>(), std::chrono::seconds(1)).status()));
  // The engine is idle: it wakes for the lease's end on its own.
  const auto start = std::chrono::steady_clock::now();
  while ((*engine)->Stats().registered_images > 0 && std::chrono::steady_clock::now() - start < std::chrono::seconds(10)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const EngineStats stats = (*engine)->Stats();
  CHECK(stats.registered_images == 0);
  CHECK(stats.image_registrations == 0);
  CHECK(stats.image_registrations_expired == 1);
  CHECK(std::chrono::steady_clock::now() - start >= std::chrono::milliseconds(500));  // not before its end
  EngineRequest by_key{{}, "", {}, 0, std::nullopt};
  by_key.image_key = *key;
  CHECK(absl::IsNotFound((*engine)->Submit(by_key, std::make_shared<Collector>()).status()));
  CHECK(absl::IsNotFound((*engine)->ReleaseImage(*key)));
  // Its slot is free again.
  CHECK((*engine)->RegisterImage(Pixels("coffee"), std::make_shared<Collector>()).ok());
}

TEST_CASE("engine: checkpoint files truncated or rewritten on disk after start change nothing") {
  // The weights are copied out of the memory-mapped files at load, so what
  // happens to the files later (a redeploy writing over them, a truncation)
  // can neither crash the server (SIGBUS on a truncated mapping) nor change
  // its answers.
  const std::string dir = testing::MakeTempDir() + "/model";
  std::filesystem::copy(Model(), dir, std::filesystem::copy_options::recursive);
  auto engine = Engine::Start({dir}, {});
  REQUIRE(engine.ok());
  const auto caption = [&] {
    auto sink = std::make_shared<Collector>();
    EngineRequest r{Pixels("chelsea"), "", {}, 0, std::nullopt};
    r.overrides.max_new_tokens = 8;
    REQUIRE((*engine)->Submit(std::move(r), sink).ok());
    sink->Wait();
    REQUIRE(sink->result().has_value());
    return sink->result()->sequences[0].token_ids;
  };
  const std::vector<int64_t> before = caption();
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".safetensors") continue;
    std::filesystem::resize_file(entry.path(), 0);  // pages of the old mapping now fault
    testing::WriteFile(entry.path().string(), "not a checkpoint any more");
    ++files;
  }
  CHECK(files > 0);
  CHECK(caption() == before);
}

// Many questions about one registered image: the image rows and the shared
// prompt prefix are computed once and reused from the prefix cache, with
// exactly the ids computed without it.
TEST_CASE("engine: prefix-cache hits give exactly the ids computed without the cache") {
  const std::vector<std::string> questions = {"what is this?", "what colour is the cat?", "what is this?",
                                              "is it a dog?", "what is on the left?", "what colour is the cat?"};
  std::vector<std::vector<std::vector<int64_t>>> ids(2);
  for (int cached = 0; cached < 2; ++cached) {
    EngineConfig config;
    config.kv_block_size = 4;
    config.prefix_caching = cached == 1;
    auto engine = Engine::Start({Model()}, config);
    REQUIRE(engine.ok());
    auto key = (*engine)->RegisterImage(Pixels("chelsea"), std::make_shared<Collector>());
    REQUIRE(key.ok());
    for (const std::string& q : questions) {  // one after another: each finds the ones before
      for (int beams : {1, 3}) {
        auto sink = std::make_shared<Collector>();
        EngineRequest req{{}, QuestionPrompt(q), {}, 0, std::nullopt};
        req.image_key = *key;
        req.overrides.max_new_tokens = 6;
        req.overrides.num_beams = beams;
        REQUIRE((*engine)->Submit(req, sink).ok());
        sink->Wait();
        REQUIRE(sink->result().has_value());
        const CaptionResult result = *sink->result();
        for (const GeneratedSequence& seq : result.sequences) ids[cached].push_back(seq.token_ids);
      }
    }
    const EngineStats stats = (*engine)->Stats();
    std::printf("PREFIX cache %s: %lld hits, %lld misses, %lld evictions, %lld blocks kept\n", cached ? "on" : "off",
                static_cast<long long>(stats.prefix_cache_hits), static_cast<long long>(stats.prefix_cache_misses),
                static_cast<long long>(stats.prefix_cache_evictions), static_cast<long long>(stats.kv_blocks_cached));
    if (cached == 1) {
      CHECK(stats.prefix_cache_hits >= 2 * static_cast<int64_t>(questions.size()));  // at least the image rows
      CHECK(stats.kv_blocks_cached > 0);
    } else {
      CHECK(stats.prefix_cache_hits == 0);
    }
    CHECK(stats.kv_blocks_used == 0);
  }
  CHECK(ids[0] == ids[1]);
}

TEST_CASE("engine: prompts over max_prompt_tokens are refused naming the limit (OPT and T5)") {
  for (const std::string& model : {Model(), T5Model()}) {
    INFO(model);
    EngineConfig config;
    config.max_prompt_tokens = 3;
    auto engine = Engine::Start({model}, config);
    REQUIRE(engine.ok());
    EngineRequest req{Pixels("chelsea"), "a photo of a cat on a mat", {}, 0, std::nullopt};
    const auto id = (*engine)->Submit(std::move(req), std::make_shared<Collector>());
    CHECK(absl::IsInvalidArgument(id.status()));
    CHECK_THAT(std::string(id.status().message()), Catch::Contains("max_prompt_tokens"));
  }
}

void CancelHalfMidStream(const std::string& model) {
  auto engine = Engine::Start({model});
  REQUIRE(engine.ok());
  std::vector<std::shared_ptr<Collector>> sinks;
  std::vector<int64_t> ids;
  for (int i = 0; i < 16; ++i) {
    auto sink = std::make_shared<Collector>();
    EngineRequest req{Pixels(i % 2 ? "chelsea" : "coffee"), "", {}, 0, std::nullopt};
    req.overrides.max_new_tokens = 60;
    req.overrides.min_new_tokens = 60;
    auto id = (*engine)->Submit(std::move(req), sink);
    REQUIRE(id.ok());
    ids.push_back(*id);
    sinks.push_back(sink);
  }
  for (int i = 0; i < 16; i += 2) {
    sinks[i]->WaitForText();
    (*engine)->Cancel(ids[i]);
  }
  (*engine)->Cancel(987654);  // unknown: harmless
  for (int i = 0; i < 16; ++i) {
    sinks[i]->Wait();
    CHECK(sinks[i]->terminal() == 1);
    REQUIRE(sinks[i]->result().has_value());
    const GeneratedSequence seq = sinks[i]->result()->sequences[0];
    if (i % 2 == 1) CHECK(seq.finish_reason == FinishReason::kLength);
    if (i % 2 == 0 && seq.token_ids.size() < 60) CHECK(seq.finish_reason == FinishReason::kCancelled);
  }
  const EngineStats stats = (*engine)->Stats();
  CHECK(stats.kv_blocks_used == 0);
  CHECK(stats.running == 0);
}

TEST_CASE("engine: cancelling half of the requests mid-stream leaves no KV block in use") {
  CancelHalfMidStream(Model());
}

TEST_CASE("engine: T5, cancelling half of the requests mid-stream leaves no KV block in use") {
  CancelHalfMidStream(T5Model());
}

TEST_CASE("engine: bad requests and shutdown") {
  EngineConfig config;
  config.inbox_capacity = 1;
  config.kv_blocks = 4;
  config.kv_block_size = 4;
  auto engine = Engine::Start({Model()}, config);
  REQUIRE(engine.ok());
  // A prompt that can never fit the KV budget is refused at once.
  EngineRequest big{Pixels("chelsea"), "a photo of a cat on a mat", {}, 0, std::nullopt};
  big.overrides.max_new_tokens = 20;
  const auto never = (*engine)->Submit(big, std::make_shared<Collector>());
  CHECK(never.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(never.status().message().find("KV") != std::string::npos);
  // One whose recompute after a preemption could not fit a step would wait forever: refused too.
  EngineConfig narrow;
  narrow.max_batched_tokens = 16;
  auto narrow_engine = Engine::Start({Model()}, narrow);
  REQUIRE(narrow_engine.ok());
  EngineRequest long_answer{Pixels("chelsea"), "", {}, 0, std::nullopt};
  long_answer.overrides.max_new_tokens = 12;  // 9 prompt tokens + 12 - 1 > 16
  const auto refused = (*narrow_engine)->Submit(long_answer, std::make_shared<Collector>());
  CHECK(refused.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(refused.status().message().find("max_batched_tokens 16") != std::string::npos);
  // Beams and samples count every sequence: against max_num_seqs and the KV cache.
  EngineConfig two_seqs;
  two_seqs.max_num_seqs = 2;
  auto two_engine = Engine::Start({Model()}, two_seqs);
  REQUIRE(two_engine.ok());
  EngineRequest wide{Pixels("chelsea"), "", {}, 0, std::nullopt};
  wide.overrides.num_beams = 3;
  const auto too_wide = (*two_engine)->Submit(wide, std::make_shared<Collector>());
  CHECK(too_wide.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(too_wide.status().message().find("max_num_seqs (2)") != std::string::npos);
  EngineRequest beams_kv{Pixels("chelsea"), "", {}, 0, std::nullopt};
  beams_kv.overrides.num_beams = 4;
  beams_kv.overrides.max_new_tokens = 3;  // one sequence of 12 tokens fits 4 blocks of 4; four do not
  const auto no_room = (*engine)->Submit(beams_kv, std::make_shared<Collector>());
  CHECK(no_room.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(no_room.status().message().find("for each of 4 sequences") != std::string::npos);
  EngineRequest image_token{Pixels("chelsea"), "<image>", {}, 0, std::nullopt};
  CHECK((*engine)->Submit(image_token, std::make_shared<Collector>()).status().code() ==
        absl::StatusCode::kInvalidArgument);

  // Inbox full: the engine thread is held inside a sink while two more arrive.
  auto blocker = std::make_shared<Collector>();
  blocker->Block(true);
  EngineRequest small{Pixels("chelsea"), "", {}, 0, std::nullopt};
  small.overrides.max_new_tokens = 3;
  REQUIRE((*engine)->Submit(small, blocker).ok());
  blocker->WaitForText();
  auto queued = std::make_shared<Collector>();
  REQUIRE((*engine)->Submit(small, queued).ok());
  const auto full = (*engine)->Submit(small, std::make_shared<Collector>());
  CHECK(full.status().code() == absl::StatusCode::kResourceExhausted);
  blocker->Block(false);

  // Shutdown with requests in flight: one terminal event each; then UNAVAILABLE.
  (*engine)->Shutdown(std::chrono::milliseconds(0));
  CHECK(blocker->terminal() == 1);
  CHECK(queued->terminal() == 1);
  CHECK((*engine)->Submit(small, std::make_shared<Collector>()).status().code() == absl::StatusCode::kUnavailable);
  CHECK_FALSE((*engine)->Healthy());
}

TEST_CASE("engine: a deadline ends a request with DEADLINE_EXCEEDED and frees its blocks") {
  auto engine = Engine::Start({Model()});
  REQUIRE(engine.ok());
  auto late = std::make_shared<Collector>();
  EngineRequest req{Pixels("chelsea"), "", {}, 0, std::chrono::steady_clock::now() + std::chrono::milliseconds(30)};
  req.overrides.max_new_tokens = 100;
  req.overrides.min_new_tokens = 100;
  late->Block(true);  // hold the engine on the first token until the deadline has passed
  REQUIRE((*engine)->Submit(req, late).ok());
  late->WaitForText();
  std::this_thread::sleep_for(std::chrono::milliseconds(40));
  late->Block(false);
  late->Wait();
  CHECK(late->error().code() == absl::StatusCode::kDeadlineExceeded);
  CHECK((*engine)->Stats().kv_blocks_used == 0);
}

TEST_CASE("engine: a model error fails only the requests of that step, the engine keeps serving") {
  // A tokenizer that knows a token the model's embedding table does not have.
  const std::string dir = testing::MakeTempDir();
  for (const auto& entry : std::filesystem::directory_iterator(Model())) {
    std::filesystem::copy_file(entry.path(), dir + "/" + entry.path().filename().string());
  }
  nlohmann::json tok = nlohmann::json::parse(testing::ReadFileOrDie(dir + "/tokenizer.json"));
  tok["added_tokens"].push_back({{"id", 5000}, {"content", "<oops>"}, {"special", false}});
  testing::WriteFile(dir + "/tokenizer.json", tok.dump());
  auto engine = Engine::Start({dir});
  REQUIRE(engine.ok());
  auto run = [&](const std::string& prompt) {
    auto sink = std::make_shared<Collector>();
    EngineRequest req{Pixels("coffee"), prompt, {}, 0, std::nullopt};
    req.overrides.max_new_tokens = 4;
    REQUIRE((*engine)->Submit(req, sink).ok());
    sink->Wait();
    return sink;
  };
  CHECK(run("a photo of")->result().has_value());
  auto bad = run("a photo of <oops>");
  CHECK(bad->error().code() == absl::StatusCode::kInternal);
  CHECK(bad->error().message().find("decoder step") != std::string::npos);
  CHECK(bad->terminal() == 1);
  CHECK(run("a photo of")->result().has_value());
  CHECK((*engine)->Healthy());
  CHECK((*engine)->Stats().kv_blocks_used == 0);
}

}  // namespace
}  // namespace blip2::engine
