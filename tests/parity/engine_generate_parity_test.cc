// Every generate run of every fixture case folder (all decoding modes, both
// model families) through the serving engine, against transformers: alone
// (prefix caching off), then all of a folder's runs at once with mixed
// priorities in a KV cache that holds only the largest of them, so sequences
// are preempted and recomputed, beams fork and copy blocks, and prompts hit
// the prefix cache. Data-driven over BLIP2_FIXTURES_DIR.
#include <condition_variable>
#include <mutex>
#include <optional>

#include "engine/engine.h"
#include "scheduler/block_allocator.h"
#include "tests/catch.h"
#include "tests/parity/fixture_set.h"
#include "tests/test_support.h"

namespace blip2::testing {
namespace {

using nlohmann::json;

class Waiter : public engine::RequestSink {
 public:
  void OnFinished(const engine::CaptionResult& result, const engine::Usage&) override {
    std::lock_guard<std::mutex> lock(mu_);
    result_ = result;
    done_ = true;
    cv_.notify_all();
  }
  void OnError(const absl::Status& status) override {
    std::lock_guard<std::mutex> lock(mu_);
    error_ = status;
    done_ = true;
    cv_.notify_all();
  }
  // The result, or the error's text.
  std::optional<engine::CaptionResult> Wait(std::string* error) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_; });
    *error = error_.ToString();
    return result_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::optional<engine::CaptionResult> result_;
  absl::Status error_;
};

struct Run {
  std::string label;
  engine::EngineRequest request;
  std::vector<std::vector<int64_t>> expected;  // new ids of each returned sequence, padded as transformers pads
  int64_t blocks = 0;                          // KV blocks it needs at most (every sequence unshared)
};

constexpr int64_t kBlockSize = 2;

std::vector<Run> Runs(const CaseFolder& folder, const std::vector<FixtureModel>& models) {
  std::vector<Run> runs;
  for (const auto& [case_name, c] : folder.reference["cases"].items()) {
    for (const auto& run : c.contains("generate") ? c["generate"] : json::array()) {
      Run r;
      r.label = case_name + " " + run["kwargs"].dump();
      r.request.pixels = ReferencePixels(models, c["image"].get<std::string>());
      r.request.prompt = c["prompt"].get<std::string>();
      r.request.overrides = OverridesFromKwargs(run["kwargs"]);
      const size_t start = NewIdsStart(folder.spec, c);
      for (const auto& seq : run["sequences"]) {
        const auto ids = seq.get<std::vector<int64_t>>();
        r.expected.emplace_back(ids.begin() + static_cast<std::ptrdiff_t>(start), ids.end());
      }
      const int64_t width = std::max<int64_t>(r.request.overrides.num_beams.value_or(1),
                                              r.request.overrides.num_return_sequences.value_or(1));
      const int64_t max_new = r.request.overrides.max_new_tokens.value_or(folder.spec.generation.max_new_tokens.value_or(20));
      r.blocks = width * scheduler::BlocksFor(static_cast<int64_t>(start) + max_new, kBlockSize);
      runs.push_back(std::move(r));
    }
  }
  return runs;
}

void Check(const Run& run, const std::optional<engine::CaptionResult>& result, const std::string& error,
           int64_t pad) {
  INFO(run.label << " " << error);
  REQUIRE(result.has_value());
  REQUIRE(result->sequences.size() == run.expected.size());
  for (size_t i = 0; i < run.expected.size(); ++i) {
    std::vector<int64_t> got = result->sequences[i].token_ids;
    INFO("sequence " << i);
    REQUIRE(got.size() <= run.expected[i].size());
    got.resize(run.expected[i].size(), pad);  // transformers pads shorter sequences
    CHECK(got == run.expected[i]);
  }
}

TEST_CASE("parity: every generate run through the engine, alone and all at once under preemption") {
  const std::vector<FixtureModel> models = DiscoverModels(FixturesDir());
  int folders = 0;
  for (const CaseFolder& folder : DiscoverCaseFolders(FixturesDir())) {
    const std::vector<Run> runs = Runs(folder, models);
    if (runs.empty()) continue;
    const int64_t pad = ReturnedPadId(folder.spec);

    engine::EngineConfig alone_config;
    alone_config.prefix_caching = false;
    auto alone = engine::Engine::Start({folder.dir}, alone_config);
    REQUIRE(alone.ok());
    for (const Run& run : runs) {
      auto sink = std::make_shared<Waiter>();
      REQUIRE((*alone)->Submit(run.request, sink).ok());
      std::string error;
      const auto result = sink->Wait(&error);
      Check(run, result, error, pad);
    }

    engine::EngineConfig tight;
    tight.kv_block_size = kBlockSize;
    tight.kv_watermark = 0;
    tight.prefix_caching = true;
    for (const Run& run : runs) tight.kv_blocks = std::max(tight.kv_blocks, run.blocks);
    auto crowded = engine::Engine::Start({folder.dir}, tight);
    REQUIRE(crowded.ok());
    std::vector<std::shared_ptr<Waiter>> sinks;
    for (size_t i = 0; i < runs.size(); ++i) {
      engine::EngineRequest request = runs[i].request;
      request.priority = static_cast<int>(i % 3);
      sinks.push_back(std::make_shared<Waiter>());
      const auto submitted = (*crowded)->Submit(std::move(request), sinks.back());
      INFO(runs[i].label << " " << submitted.status().ToString());
      REQUIRE(submitted.ok());
    }
    for (size_t i = 0; i < runs.size(); ++i) {
      std::string error;
      const auto result = sinks[i]->Wait(&error);
      Check(runs[i], result, error, pad);
    }
    const engine::EngineStats stats = (*crowded)->Stats();
    std::printf("ENGINE PARITY %-22s %zu runs alone and at once in %lld blocks: %lld preemptions, %lld block copies, "
                "%lld prefix-cache block hits\n",
                folder.name.c_str(), runs.size(), static_cast<long long>(tight.kv_blocks),
                static_cast<long long>(stats.preemptions), static_cast<long long>(stats.block_copies),
                static_cast<long long>(stats.prefix_cache_hits));
    CHECK(stats.preemptions > 0);
    CHECK(stats.block_copies > 0);
    CHECK(stats.kv_blocks_used == 0);
    ++folders;
  }
  CHECK(folders > 0);
}

}  // namespace
}  // namespace blip2::testing
