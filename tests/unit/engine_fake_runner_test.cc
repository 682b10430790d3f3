// The engine loop with its model runner replaced or wrapped
// (EngineConfig::wrap_runner): a fake decoder whose greedy ids are known in
// closed form drives hundreds of mixed requests through a tiny KV cache; a
// runner that fails one step shows a failed step ends only its own requests;
// a runner that holds at a chosen step lines a greedy request up beside a
// beam search at a known point, so the test needs no timing.
#include <ATen/ATen.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <cstring>
#include <stdexcept>

#include "engine/model/safetensors.h"
#include "engine/runtime/engine.h"
#include "engine/runtime/model_runner.h"
#include "engine/runtime/waiting_sink.h"
#include "tests/catch.h"
#include "tests/test_support.h"

namespace blip2::engine {
namespace {

std::string Model() { return testing::FixturesDir() + "/blip2-tiny-opt"; }

std::vector<float> Pixels(const std::string& image) { return testing::FixturePixels(Model(), image); }

// A decoder that prefers token Next(t) after token t: every row's logits are
// 0 except 5 at Next(last input token). It keeps no KV (it needs none).
class FakeRunner : public ModelRunner {
 public:
  explicit FakeRunner(int64_t vocab) : vocab_(vocab) {}
  static int64_t Next(int64_t token, int64_t vocab) { return 10 + (token * 31 + 7) % (vocab - 10); }
  at::Tensor Run(const scheduler::SchedulerOutput& out, const std::vector<DecoderInput>& inputs) override {
    at::Tensor logits = at::zeros({static_cast<int64_t>(inputs.size()), vocab_});
    for (size_t i = 0; i < inputs.size(); ++i) {
      logits[static_cast<int64_t>(i)][Next(inputs[i].token_ids.back(), vocab_)] = 5.0f;
    }
    ++steps;
    return logits;
  }
  std::atomic<int> steps{0};

 private:
  int64_t vocab_;
};

TEST_CASE("engine with a fake decoder: 300 mixed requests in a tiny KV cache end once each, greedy ids as the fake dictates") {
  const int64_t vocab = 200;  // below the tiny OPT's vocabulary: every id is a real token
  EngineConfig config;
  config.kv_block_size = 2;
  config.kv_blocks = 48;  // a 3-beam request of 9 + 16 tokens needs 39
  config.kv_watermark = 0;
  FakeRunner* fake = nullptr;
  config.wrap_runner = [&](std::unique_ptr<ModelRunner>) {
    auto runner = std::make_unique<FakeRunner>(vocab);
    fake = runner.get();
    return std::unique_ptr<ModelRunner>(std::move(runner));
  };
  auto engine = Engine::Start({Model()}, config);
  REQUIRE(engine.ok());
  const std::vector<std::string> images = {"chelsea", "coffee", "astronaut"};
  std::vector<std::vector<float>> pixels;
  for (const std::string& image : images) pixels.push_back(Pixels(image));
  struct Sent {
    std::shared_ptr<WaitingSink> sink;
    int kind;  // 0 greedy, 1 beams, 2 samples
    int64_t id;
  };
  std::vector<Sent> sent;
  for (int i = 0; i < 300; ++i) {
    EngineRequest r{pixels[i % 3], "", {}, i % 3, std::nullopt};
    r.overrides.max_new_tokens = 4 + i % 13;
    r.overrides.min_new_tokens = r.overrides.max_new_tokens;  // the fake never ends early
    const int kind = i % 7 == 3 ? 1 : i % 7 == 5 ? 2 : 0;
    if (kind == 1) r.overrides.num_beams = 3;
    if (kind == 2) {
      r.overrides.num_return_sequences = 2;
      r.overrides.do_sample = true;
      r.overrides.seed = i;
    }
    auto sink = std::make_shared<WaitingSink>();
    auto id = (*engine)->Submit(std::move(r), sink);
    INFO(id.status().ToString());
    REQUIRE(id.ok());
    sent.push_back({sink, kind, *id});
  }
  const int64_t last_prompt_token = 2;  // the tiny OPT's BOS (</s>) ends a captioning prompt
  for (size_t i = 0; i < sent.size(); ++i) {
    INFO("request " << i);
    const auto result = sent[i].sink->Wait();
    REQUIRE(result.ok());
    const int64_t n = 4 + static_cast<int64_t>(i) % 13;
    const size_t want_sequences = sent[i].kind == 0 ? 1 : 2;
    REQUIRE(result->sequences.size() >= 1);
    CHECK(result->sequences.size() <= want_sequences);
    for (const GeneratedSequence& seq : result->sequences) CHECK(static_cast<int64_t>(seq.token_ids.size()) == n);
    if (sent[i].kind == 0) {
      std::vector<int64_t> expected;
      int64_t t = last_prompt_token;
      for (int64_t k = 0; k < n; ++k) expected.push_back(t = FakeRunner::Next(t, vocab));
      CHECK(result->sequences[0].token_ids == expected);
    }
  }
  const EngineStats stats = (*engine)->Stats();
  CHECK(stats.finished == 300);
  CHECK(stats.failed == 0);
  CHECK(stats.kv_blocks_used == 0);
  CHECK(stats.preemptions > 0);
  CHECK(stats.block_copies > 0);
  CHECK(fake->steps > 0);
}

// Delegates to the real runner, and throws on one chosen step.
class FailingRunner : public ModelRunner {
 public:
  FailingRunner(std::unique_ptr<ModelRunner> real, int fail_at) : real_(std::move(real)), fail_at_(fail_at) {}
  at::Tensor Run(const scheduler::SchedulerOutput& out, const std::vector<DecoderInput>& inputs) override {
    if (++steps_ == fail_at_) {
      failed_sequences = static_cast<int>(out.sequences.size());
      throw std::runtime_error("injected fault");
    }
    return real_->Run(out, inputs);
  }
  std::atomic<int> failed_sequences{0};

 private:
  std::unique_ptr<ModelRunner> real_;
  int steps_ = 0;
  int fail_at_;
};

TEST_CASE("engine: a model step that throws fails exactly the requests in that step, the rest and later ones finish") {
  EngineConfig config;
  config.max_num_seqs = 3;  // at most three sequences per step: the others wait outside the failing one
  FailingRunner* failing = nullptr;
  config.wrap_runner = [&](std::unique_ptr<ModelRunner> real) {
    auto runner = std::make_unique<FailingRunner>(std::move(real), 3);
    failing = runner.get();
    return std::unique_ptr<ModelRunner>(std::move(runner));
  };
  auto engine = Engine::Start({Model()}, config);
  REQUIRE(engine.ok());
  std::vector<std::shared_ptr<WaitingSink>> sinks;
  for (int i = 0; i < 6; ++i) {
    EngineRequest r{Pixels(i % 2 ? "coffee" : "chelsea"), "", {}, 0, std::nullopt};
    r.overrides.max_new_tokens = 8;
    if (i == 4) r.overrides.num_beams = 3;
    sinks.push_back(std::make_shared<WaitingSink>());
    REQUIRE((*engine)->Submit(std::move(r), sinks.back()).ok());
  }
  int failed = 0, failed_sequences = 0;
  for (auto& sink : sinks) {
    const auto result = sink->Wait();
    if (result.ok()) continue;
    ++failed;
    CHECK(result.status().code() == absl::StatusCode::kInternal);
    CHECK(std::string(result.status().message()).find("decoder step") != std::string::npos);
  }
  failed_sequences = failing->failed_sequences;
  CHECK(failed >= 1);
  CHECK(failed_sequences >= failed);  // a beam request has several sequences in the step
  CHECK(failed_sequences <= 3);
  CHECK(failed < 6);  // those outside the step finished
  auto after = std::make_shared<WaitingSink>();
  EngineRequest r{Pixels("chelsea"), "", {}, 0, std::nullopt};
  r.overrides.max_new_tokens = 4;
  REQUIRE((*engine)->Submit(std::move(r), after).ok());
  CHECK(after->Wait().ok());
  const EngineStats stats = (*engine)->Stats();
  CHECK(stats.failed == failed);
  CHECK(stats.kv_blocks_used == 0);
}

// Delegates to the real runner; after `hold_after` steps it waits until
// Release(), so a test can line requests up at a known step.
class GateRunner : public ModelRunner {
 public:
  GateRunner(std::unique_ptr<ModelRunner> real, int hold_after) : real_(std::move(real)), hold_after_(hold_after) {}
  at::Tensor Run(const scheduler::SchedulerOutput& out, const std::vector<DecoderInput>& inputs) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (++steps_ > hold_after_) {
      held_ = true;
      cv_.notify_all();
      cv_.wait(lock, [&] { return released_; });
    }
    lock.unlock();
    return real_->Run(out, inputs);
  }
  void WaitUntilHeld() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return held_; });
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    released_ = true;
    cv_.notify_all();
  }

 private:
  std::unique_ptr<ModelRunner> real_;
  std::mutex mu_;
  std::condition_variable cv_;
  int steps_ = 0;
  int hold_after_;
  bool held_ = false, released_ = false;
};

// Collects streamed tokens and text of a request besides waiting for it.
class Watcher : public WaitingSink {
 public:
  void OnToken(int64_t, const TokenLogprob*) override { ++tokens; }
  void OnText(const std::string&) override { ++texts; }
  std::atomic<int> tokens{0}, texts{0};
};

// Beam search runs as scheduler sequences beside everything else: a greedy
// request that joins a long 8-beam search two steps in finishes while the
// search still runs (it needs 60 steps); the search streams nothing early, and
// a cancel ends it within a step with every KV block back.
TEST_CASE("engine: a beam search stalls no one, streams nothing early, and can be cancelled mid-way") {
  for (const std::string& model : {Model(), testing::FixturesDir() + "/blip2-tiny-flan-t5"}) {
    INFO(model);
    EngineConfig config;
    config.vision_max_queue_delay = std::chrono::microseconds(0);
    GateRunner* gate = nullptr;
    config.wrap_runner = [&](std::unique_ptr<ModelRunner> real) {
      auto runner = std::make_unique<GateRunner>(std::move(real), 2);
      gate = runner.get();
      return std::unique_ptr<ModelRunner>(std::move(runner));
    };
    auto engine = Engine::Start({model}, config);
    REQUIRE(engine.ok());
    auto beams = std::make_shared<Watcher>();
    EngineRequest search{Pixels("chelsea"), "", {}, 0, std::nullopt};
    search.overrides.num_beams = 8;
    search.overrides.max_new_tokens = 60;
    search.overrides.min_new_tokens = 60;
    search.overrides.early_stopping = EarlyStopping::kNever;
    auto id = (*engine)->Submit(search, beams);
    REQUIRE(id.ok());
    gate->WaitUntilHeld();  // the search has had two steps
    auto greedy = std::make_shared<Watcher>();
    EngineRequest quick{Pixels("coffee"), "", {}, 0, std::nullopt};
    quick.overrides.max_new_tokens = 4;
    REQUIRE((*engine)->Submit(quick, greedy).ok());
    gate->Release();
    const auto quick_result = greedy->Wait();
    REQUIRE(quick_result.ok());
    CHECK(greedy->tokens > 0);  // a single sequence streams
    CHECK((*engine)->Stats().running == 1);  // the search, still searching
    CHECK(beams->tokens == 0);
    CHECK(beams->texts == 0);
    CHECK((*engine)->Stats().kv_blocks_used > 0);
    (*engine)->Cancel(*id);
    const auto cancelled = beams->Wait();
    REQUIRE(cancelled.ok());
    REQUIRE(!cancelled->sequences.empty());
    for (const GeneratedSequence& seq : cancelled->sequences) {
      CHECK(seq.finish_reason == FinishReason::kCancelled);
      CHECK(seq.token_ids.size() < 60);
    }
    const EngineStats stats = (*engine)->Stats();
    CHECK(stats.kv_blocks_used == 0);
    CHECK(stats.running == 0);
    CHECK(stats.block_copies > 0);  // the beams diverged inside shared blocks

    // A deadline ends a search the same way, with DEADLINE_EXCEEDED.
    auto late = std::make_shared<WaitingSink>();
    search.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(5);
    REQUIRE((*engine)->Submit(search, late).ok());
    CHECK(late->Wait().status().code() == absl::StatusCode::kDeadlineExceeded);
    CHECK((*engine)->Stats().kv_blocks_used == 0);
  }
}

}  // namespace
}  // namespace blip2::engine
