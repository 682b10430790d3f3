// Every generate run of every fixture case folder (all decoding modes, both
// model families) through the serving engine, against transformers: alone
// (prefix caching off), then all of a folder's runs at once with mixed
// priorities in a KV cache that holds only the largest of them, so sequences
// are preempted and recomputed, beams fork and copy blocks, and prompts hit
// the prefix cache. Data-driven over BLIP2_FIXTURES_DIR.
#include <optional>

#include "engine/runtime/engine.h"
#include "engine/runtime/waiting_sink.h"
#include "scheduler/block_allocator.h"
#include "tests/catch.h"
#include "tests/parity/fixture_set.h"
#include "tests/test_support.h"

namespace blip2::testing {
namespace {

using nlohmann::json;

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
      r.request.pixels = ReferencePixels(models, c["image"].get<std::string>(), folder.dir);
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

void Check(const Run& run, const absl::StatusOr<engine::CaptionResult>& result, int64_t pad) {
  INFO(run.label << " " << result.status().ToString());
  REQUIRE(result.ok());
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
      auto sink = std::make_shared<engine::WaitingSink>();
      REQUIRE((*alone)->Submit(run.request, sink).ok());
      Check(run, sink->Wait(), pad);
    }

    engine::EngineConfig tight;
    tight.kv_block_size = kBlockSize;
    tight.kv_watermark = 0;
    tight.prefix_caching = true;
    for (const Run& run : runs) tight.kv_blocks = std::max(tight.kv_blocks, run.blocks);
    auto crowded = engine::Engine::Start({folder.dir}, tight);
    REQUIRE(crowded.ok());
    std::vector<std::shared_ptr<engine::WaitingSink>> sinks;
    for (size_t i = 0; i < runs.size(); ++i) {
      engine::EngineRequest request = runs[i].request;
      request.priority = static_cast<int>(i % 3);
      sinks.push_back(std::make_shared<engine::WaitingSink>());
      const auto submitted = (*crowded)->Submit(std::move(request), sinks.back());
      INFO(runs[i].label << " " << submitted.status().ToString());
      REQUIRE(submitted.ok());
    }
    for (size_t i = 0; i < runs.size(); ++i) {
      Check(runs[i], sinks[i]->Wait(), pad);
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
