// The engine under load on the CPU with the tiny fixture model:
//  1. generated tokens/s with 1, 8, 32 and 128 concurrent requests (32 new
//     tokens each, distinct images) against the same requests run one after
//     another through the offline captioner;
//  2. the scheduler's cost per step with 1,000 running sequences (no model);
//  3. 1,000 requests over 10 distinct images against 1,000 distinct images
//     (the image cache).
// --compare-static: the same workload (N distinct images, exactly 32 new
// tokens) through the engine at each --concurrency and as static batches of
// that size straight through the image path and decoder; prints
// "engine/static R" and where each engine step's time goes.
// --load-only: a sustained-load sweep on a given or synthetic model; with
// --soak N also N captions at 64 in flight, reporting host and device memory
// every N/5 requests (no growth expected once caches are full).
// Prints tables and writes JSON (--out).
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

#include "benchmarks/static_batch.h"
#include "benchmarks/synthetic_model.h"
#include "common/cli_flags.h"
#include "engine/generation/captioner.h"
#include "engine/runtime/engine.h"
#include "engine/model/torch_util.h"
#include "scheduler/scheduler.h"
#include "engine/runtime/waiting_sink.h"

namespace blip2::bench {
namespace {

engine::GenerationOverrides Tokens(int64_t n) {
  engine::GenerationOverrides o;
  o.max_new_tokens = n;
  o.min_new_tokens = n;  // every request does the same work
  return o;
}

// Submits all requests at once and waits for all; returns seconds.
double RunConcurrent(engine::Engine& engine, const std::vector<std::vector<float>>& images, int64_t new_tokens) {
  const auto start = Clock::now();
  std::vector<std::shared_ptr<engine::WaitingSink>> sinks;
  for (const auto& image : images) {
    auto sink = std::make_shared<engine::WaitingSink>();
    engine::EngineRequest r{image, "", Tokens(new_tokens), 0, std::nullopt};
    if (!engine.Submit(std::move(r), sink).ok()) std::abort();
    sinks.push_back(sink);
  }
  for (auto& s : sinks) {
    if (!s->Wait().ok()) std::abort();
  }
  return SecondsSince(start);
}

// Where an average engine step's time went between two snapshots (ms), and
// the encoder batches the engine thread ran in that time (ms in all).
nlohmann::json StepPhases(const engine::EngineStats& before, const engine::EngineStats& after) {
  const double steps = std::max<int64_t>(1, after.steps - before.steps);
  return {{"schedule", (after.step_schedule_ms - before.step_schedule_ms) / steps},
          {"inputs", (after.step_inputs_ms - before.step_inputs_ms) / steps},
          {"forward", (after.step_forward_ms - before.step_forward_ms) / steps},
          {"sample", (after.step_sample_ms - before.step_sample_ms) / steps},
          {"emit", (after.step_emit_ms - before.step_emit_ms) / steps},
          {"vision_total", after.vision_ms - before.vision_ms},
          {"admit_total", after.admit_ms - before.admit_ms},
          {"idle_total", after.idle_ms - before.idle_ms}};
}

void PrintPhases(int window, const nlohmann::json& row) {
  const nlohmann::json& p = row["step_phases_ms"];
  std::printf("  %-8d step %.3f ms: schedule %.3f, inputs %.3f, forward %.3f, sample %.3f, emit %.3f; "
              "in all: vision %.0f ms, admission %.0f ms, idle %.0f ms of %.0f ms\n",
              window, row["ms_per_step"].get<double>(), p["schedule"].get<double>(), p["inputs"].get<double>(),
              p["forward"].get<double>(), p["sample"].get<double>(), p["emit"].get<double>(),
              p["vision_total"].get<double>(), p["admit_total"].get<double>(), p["idle_total"].get<double>(),
              row["seconds"].get<double>() * 1e3);
}

nlohmann::json RunLoad(engine::Engine& engine, int total, int window, int64_t new_tokens, uint32_t seed_base = 900000);

// Times every token of one request as the engine hands it over (OnToken).
class TokenClock : public engine::WaitingSink {
 public:
  void OnToken(int64_t, const engine::TokenLogprob*) override {
    std::lock_guard<std::mutex> lock(mu_);
    times_.push_back(Clock::now());
  }
  // Longest and mean gap between consecutive tokens, ms.
  std::pair<double, double> Gaps() {
    std::lock_guard<std::mutex> lock(mu_);
    double longest = 0, sum = 0;
    for (size_t i = 1; i < times_.size(); ++i) {
      const double gap = std::chrono::duration<double, std::milli>(times_[i] - times_[i - 1]).count();
      longest = std::max(longest, gap);
      sum += gap;
    }
    return {longest, times_.size() > 1 ? sum / static_cast<double>(times_.size() - 1) : 0.0};
  }

 private:
  std::mutex mu_;
  std::vector<Clock::time_point> times_;
};

// --beam-stall: in the engine itself (no gRPC, no other process), a greedy
// request's longest and mean gap between tokens alone and while two clients
// run 8-beam searches back to back beside it (each client on its own image,
// so after its first search no image is encoded: what is measured is the
// searches, not the vision encoder).
nlohmann::json BeamStall(engine::Engine& engine, int rounds, int64_t tokens) {
  const auto shape = engine.pixel_shape();
  auto greedy = [&](uint32_t seed) {
    auto sink = std::make_shared<TokenClock>();
    engine::EngineRequest r{RandomImage(shape, seed), "", Tokens(tokens), 0, std::nullopt};
    if (!engine.Submit(std::move(r), sink).ok() || !sink->Wait().ok()) std::abort();
    return sink->Gaps();
  };
  nlohmann::json rows = nlohmann::json::array();
  std::vector<double> alone, beside;
  for (int round = 0; round < rounds; ++round) {
    const auto a = greedy(300000 + round);
    std::atomic<bool> done{false};
    std::atomic<int> searches{0};
    std::vector<std::thread> clients;
    for (int c = 0; c < 2; ++c) {
      clients.emplace_back([&, c] {
        for (uint32_t n = 0; !done; ++n) {
          engine::GenerationOverrides o = Tokens(tokens);
          o.num_beams = 8;
          o.early_stopping = engine::EarlyStopping::kNever;
          auto sink = std::make_shared<engine::WaitingSink>();
          // Each client's own image, encoded once: the searches' cost, not the encoder's.
          engine::EngineRequest r{RandomImage(shape, 400000 + 100000 * c), "", o, 0, std::nullopt};
          if (!engine.Submit(std::move(r), sink).ok() || !sink->Wait().ok()) std::abort();
          ++searches;
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const engine::EngineStats before = engine.Stats();
    const auto b = greedy(500000 + round);
    const engine::EngineStats after = engine.Stats();
    const nlohmann::json phases = StepPhases(before, after);
    done = true;
    for (auto& t : clients) t.join();
    alone.push_back(a.first);
    beside.push_back(b.first);
    rows.push_back({{"alone_longest_ms", a.first}, {"alone_mean_ms", a.second}, {"beside_longest_ms", b.first},
                    {"beside_mean_ms", b.second}, {"searches", searches.load()}, {"beside_step_phases_ms", phases}});
    std::printf("round %d: longest gap alone %.2f ms (mean %.2f), beside two 8-beam searches %.2f ms (mean %.2f; "
                "%d searches; step beside: schedule %.3f, inputs %.3f, forward %.3f, sample %.3f, emit %.3f ms)\n",
                round + 1, a.first, a.second, b.first, b.second, searches.load(), phases["schedule"].get<double>(),
                phases["inputs"].get<double>(), phases["forward"].get<double>(), phases["sample"].get<double>(),
                phases["emit"].get<double>());
  }
  const double ratio = Median(beside) / Median(alone);
  std::printf("engine: longest inter-token gap (median of %d) alone %.2f ms, beside %.2f ms: %.2fx\n", rounds,
              Median(alone), Median(beside), ratio);
  return {{"rounds", rows}, {"alone_median_longest_ms", Median(alone)}, {"beside_median_longest_ms", Median(beside)},
          {"beside_over_alone", ratio}};
}

// --compare-static: engine against static batches, per concurrency.
nlohmann::json CompareStatic(const engine::EngineOptions& options, const engine::EngineConfig& config,
                             const std::string& levels, int64_t new_tokens) {
  const std::string& model = options.model_dir;
  nlohmann::json rows = nlohmann::json::array();
  auto engine = engine::Engine::Start(options, config);
  if (!engine.ok()) std::abort();
  const auto shape = (*engine)->pixel_shape();
  for (absl::string_view c : absl::StrSplit(levels, ',')) {
    int window = 0;
    if (!absl::SimpleAtoi(c, &window) || window <= 0) continue;
    const int total = std::max(128, 4 * window);
    std::printf("\nconcurrency %d, %d distinct images, %lld new tokens each; medians of 3 runs\n", window, total,
                static_cast<long long>(new_tokens));
    std::printf("%-10s %-10s %12s %12s %10s %10s %10s %10s\n", "requests", "concurrent", "captions/s", "tokens/s",
                "TTFT p50", "TTFT p99", "ms/step", "KV peak");
    // Three runs each, alternating, with images neither side has seen, after
    // one of each that is not counted: the first run at a new size pays for
    // memory the allocator has not handed out yet (measured at 256: the first
    // engine run 361 captions/s, the next two 450 and 531).
    {
      RunLoad(**engine, total, window, new_tokens, 7000000u);
      std::vector<std::vector<float>> images;
      for (int i = 0; i < total; ++i) images.push_back(RandomImage(shape, 70000000u + 10000u * window + i));
      RunStaticBatches(model, options.device, options.dtype, images, window, new_tokens);
    }
    std::vector<nlohmann::json> runs;
    std::vector<double> engine_rates, static_rates, static_vision_ms;
    for (uint32_t run = 0; run < 3; ++run) {
      runs.push_back(RunLoad(**engine, total, window, new_tokens, 1000000u * (run + 1)));
      engine_rates.push_back(runs.back()["captions_per_s"].get<double>());
      std::vector<std::vector<float>> images;
      for (int i = 0; i < total; ++i) images.push_back(RandomImage(shape, 50000000u + 1000000u * run + 10000u * window + i));
      const StaticRun ideal = RunStaticBatches(model, options.device, options.dtype, images, window, new_tokens);
      static_rates.push_back(total / ideal.seconds);
      static_vision_ms.push_back(ideal.vision_seconds * 1e3);
    }
    const double engine_rate = Median(engine_rates);
    nlohmann::json row = runs[0];
    for (const nlohmann::json& r : runs) {
      if (r["captions_per_s"].get<double>() == engine_rate) row = r;
    }
    const double static_rate = Median(static_rates);
    const double ratio = engine_rate / static_rate;
    row["engine_captions_per_s_runs"] = engine_rates;
    row["static_captions_per_s_runs"] = static_rates;
    row["static_captions_per_s"] = static_rate;
    row["static_vision_ms_runs"] = static_vision_ms;
    row["engine_over_static"] = ratio;
    PrintPhases(window, row);
    const size_t median_run = static_cast<size_t>(
        std::find(static_rates.begin(), static_rates.end(), static_rate) - static_rates.begin());
    std::printf("  static batches of %d: %.1f captions/s (image path %.0f ms of %.0f ms)\n  engine/static R %.2f\n",
                window, static_rate, static_vision_ms[median_run], total / static_rate * 1e3, ratio);
    std::fflush(stdout);
    rows.push_back(row);
  }
  return rows;
}

// Load mode: `total` caption requests (distinct images, new_tokens each) with at
// most `window` in flight; captions/s, tokens/s, time to first token p50/p99,
// ms per engine step and the most KV blocks in use.
nlohmann::json RunLoad(engine::Engine& engine, int total, int window, int64_t new_tokens, uint32_t seed_base) {
  const auto shape = engine.pixel_shape();
  // Distinct images, never seen by this engine before (seeds differ per level,
  // or the image cache would answer later levels), made before the clock starts.
  std::vector<std::vector<float>> images;
  for (int i = 0; i < total; ++i) images.push_back(RandomImage(shape, seed_base + 10000u * window + i));
  const engine::EngineStats before = engine.Stats();
  std::vector<std::shared_ptr<engine::WaitingSink>> sinks(total);
  std::vector<double> ttft;
  int64_t peak_blocks = 0;
  const auto start = Clock::now();
  int next = 0, done = 0;
  while (done < total) {
    while (next < total && next - done < window) {
      sinks[next] = std::make_shared<engine::WaitingSink>();
      engine::EngineRequest r{std::move(images[next]), "", Tokens(new_tokens), 0, std::nullopt};
      if (!engine.Submit(std::move(r), sinks[next]).ok()) std::abort();
      ++next;
    }
    if (!sinks[done]->Wait().ok()) std::abort();
    ttft.push_back(sinks[done]->usage().time_to_first_token_ms);
    peak_blocks = std::max(peak_blocks, engine.Stats().kv_blocks_used);
    ++done;
  }
  const double seconds = SecondsSince(start);
  const engine::EngineStats after = engine.Stats();
  std::sort(ttft.begin(), ttft.end());
  const int64_t steps = after.steps - before.steps;
  nlohmann::json row = {{"requests", total},
                        {"concurrent", window},
                        {"new_tokens", new_tokens},
                        {"seconds", seconds},
                        {"captions_per_s", total / seconds},
                        {"tokens_per_s", total * new_tokens / seconds},
                        {"ttft_p50_ms", ttft[ttft.size() / 2]},
                        {"ttft_p99_ms", ttft[std::min(ttft.size() - 1, ttft.size() * 99 / 100)]},
                        {"images_encoded", after.images_encoded - before.images_encoded},
                        {"engine_steps", steps},
                        {"ms_per_step", steps > 0 ? seconds * 1e3 / steps : 0.0},
                        {"kv_blocks_peak_sampled", peak_blocks},
                        {"kv_blocks_total", after.kv_blocks_total},
                        {"step_phases_ms", StepPhases(before, after)}};
  std::printf("%-10d %-10d %12.1f %12.0f %10.1f %10.1f %10.2f %10lld\n", total, window,
              row["captions_per_s"].get<double>(), row["tokens_per_s"].get<double>(), row["ttft_p50_ms"].get<double>(),
              row["ttft_p99_ms"].get<double>(), row["ms_per_step"].get<double>(), static_cast<long long>(peak_blocks));
  std::fflush(stdout);
  return row;
}

// Soak: `total` captions with distinct images, `window` in flight; memory and
// cache state after each fifth. A leak shows as growth between checkpoints
// once the caches are full.
nlohmann::json RunSoak(engine::Engine& engine, const std::string& device_name, int total, int window,
                       int64_t new_tokens, int64_t block_size) {
  const auto shape = engine.pixel_shape();
  const at::Device device = engine::ParseDevice(device_name).value_or(at::Device(at::kCPU));
  std::vector<std::shared_ptr<engine::WaitingSink>> sinks(total);
  nlohmann::json rows = nlohmann::json::array();
  std::printf("\n%-10s %12s %16s %16s %16s %10s %14s\n", "requests", "host RSS MB", "device alloc MB",
              "device reserved", "device peak MB", "KV used", "image cache MB");
  int next = 0, done = 0;
  const auto start = Clock::now();
  while (done < total) {
    while (next < total && next - done < window) {
      sinks[next] = std::make_shared<engine::WaitingSink>();
      engine::EngineRequest r{RandomImage(shape, 5000000u + next), "", Tokens(new_tokens), 0, std::nullopt};
      if (!engine.Submit(std::move(r), sinks[next]).ok()) std::abort();
      ++next;
    }
    if (!sinks[done]->Wait().ok()) std::abort();
    sinks[done].reset();
    ++done;
    if (done % std::max(1, total / 5) == 0 || done == total) {
      const engine::MemoryUse m = engine::CurrentMemoryUse(device);
      const engine::EngineStats st = engine.Stats();
      const auto mb = [](int64_t b) { return b < 0 ? -1.0 : b / 1048576.0; };
      rows.push_back({{"requests", done}, {"host_rss_mb", mb(m.host_rss_bytes)},
                      {"device_allocated_mb", mb(m.device_allocated_bytes)},
                      {"device_reserved_mb", mb(m.device_reserved_bytes)},
                      {"device_peak_allocated_mb", mb(m.device_peak_allocated_bytes)},
                      {"kv_blocks_used", st.kv_blocks_used}, {"image_cache_mb", mb(st.image_cache_bytes)}});
      std::printf("%-10d %12.1f %16.1f %16.1f %16.1f %10lld %14.1f\n", done, mb(m.host_rss_bytes),
                  mb(m.device_allocated_bytes), mb(m.device_reserved_bytes), mb(m.device_peak_allocated_bytes),
                  static_cast<long long>(st.kv_blocks_used), mb(st.image_cache_bytes));
      std::fflush(stdout);
    }
  }
  const engine::EngineStats st = engine.Stats();
  // Concurrent captions the KV cache holds: query tokens + BOS + new tokens each.
  const int64_t per_caption = static_cast<int64_t>(engine.spec().processor_num_query_tokens) + 1 + new_tokens;
  const int64_t blocks_per_caption = (per_caption + block_size - 1) / block_size;
  return {{"requests", total}, {"concurrent", window}, {"new_tokens", new_tokens}, {"seconds", SecondsSince(start)},
          {"kv_blocks_total", st.kv_blocks_total}, {"kv_capacity_concurrent_captions", st.kv_blocks_total / blocks_per_caption},
          {"checkpoints", rows}};
}

int Main(int argc, char** argv) {
  auto flags = common::CliFlags::Parse(std::vector<std::string>(argv + 1, argv + argc),
                                       {"out", "model", "device", "dtype", "requests", "concurrency", "new-tokens",
                                        "kv-cache-mb", "soak", "image-cache-mb", "vision-max-batch", "rounds",
                                        "intra-op-threads"},
                                       {"load-only", "synthetic", "compare-static", "beam-stall"});
  if (!flags.ok()) return 2;
  if (flags->Has("beam-stall")) {
    engine::EngineConfig config;
    config.intra_op_threads = flags->GetInt("intra-op-threads", 0).value_or(0);
    const std::string model = flags->Get("model", BLIP2_DEFAULT_FIXTURES "/blip2-tiny-opt");
    auto engine = engine::Engine::Start({model}, config);
    if (!engine.ok()) return 1;
    nlohmann::json report = {{"benchmark", "engine_beam_stall"}, {"model", model},
                             {"torch_intra_op_threads", at::get_num_threads()}};
    report["results"] = BeamStall(**engine, static_cast<int>(flags->GetInt("rounds", 7).value_or(7)),
                                  flags->GetInt("new-tokens", 100).value_or(100));
    SaveReport(report.dump(1), flags->Get("out", ""));
    return 0;
  }
  if (flags->Has("compare-static")) {
    engine::EngineConfig config;
    config.max_num_seqs = 512;
    config.vision_max_batch = flags->GetInt("vision-max-batch", 64).value_or(64);
    const std::string model = flags->Get("model", BLIP2_DEFAULT_FIXTURES "/blip2-tiny-opt");
    nlohmann::json report = {{"benchmark", "engine_vs_static"}, {"model", model},
                             {"torch_intra_op_threads", at::get_num_threads()}};
    report["device"] = flags->Get("device", "cpu");
    report["dtype"] = flags->Get("dtype", "float32");
    report["results"] = CompareStatic({model, flags->Get("device", "cpu"), flags->Get("dtype", "float32")}, config,
                                      flags->Get("concurrency", "1,32,256"), flags->GetInt("new-tokens", 32).value_or(32));
    SaveReport(report.dump(1), flags->Get("out", ""));
    return 0;
  }
  if (flags->Has("load-only")) {
    // GPU mode: a load sweep on a given or synthetic full-size model.
    engine::EngineConfig config;
    config.max_num_seqs = 512;
    config.kv_cache_bytes = flags->GetInt("kv-cache-mb", 16384).value_or(16384) << 20;
    config.vision_max_batch = 64;
    config.image_cache_bytes = flags->GetInt("image-cache-mb", 64).value_or(64) << 20;
    const int total = static_cast<int>(flags->GetInt("requests", 512).value_or(512));
    const int64_t new_tokens = flags->GetInt("new-tokens", 32).value_or(32);
    nlohmann::json report = {{"benchmark", "engine_load"}, {"device", flags->Get("device", "cpu")},
                             {"dtype", flags->Get("dtype", "float32")}, {"results", nlohmann::json::array()}};
    auto sweep = [&](const std::string& dir) {
      auto engine = engine::Engine::Start({dir, flags->Get("device", "cpu"), flags->Get("dtype", "float32")}, config);
      if (!engine.ok()) {
        std::fprintf(stderr, "%s\n", engine.status().ToString().c_str());
        return;
      }
      std::printf("%-10s %-10s %12s %12s %10s %10s %10s %10s\n", "requests", "concurrent", "captions/s", "tokens/s",
                  "TTFT p50", "TTFT p99", "ms/step", "KV peak");
      std::vector<std::pair<int, nlohmann::json>> rows;
      for (absl::string_view c : absl::StrSplit(flags->Get("concurrency", "64,128,256"), ',')) {
        int window = 0;
        if (absl::SimpleAtoi(c, &window) && window > 0) rows.emplace_back(window, RunLoad(**engine, total, window, new_tokens));
      }
      for (const auto& [window, row] : rows) {
        PrintPhases(window, row);
        report["results"].push_back(row);
      }
      if (flags->Has("soak")) {
        const int soak = static_cast<int>(flags->GetInt("soak", 5000).value_or(5000));
        report["soak"] = RunSoak(**engine, flags->Get("device", "cpu"), soak, 64, new_tokens, config.kv_block_size);
      }
    };
    if (flags->Has("synthetic")) {
      if (!WithSyntheticOpt27b(true, sweep).ok()) return 1;
    } else {
      sweep(flags->Get("model", BLIP2_DEFAULT_FIXTURES "/blip2-tiny-opt"));
    }
    SaveReport(report.dump(1), flags->Get("out", ""));
    return 0;
  }
  const std::string model = flags->Get("model", BLIP2_DEFAULT_FIXTURES "/blip2-tiny-opt");
  constexpr int64_t kNewTokens = 32;
  nlohmann::json report = {{"benchmark", "engine"}, {"model", model}, {"torch_intra_op_threads", at::get_num_threads()}};

  engine::EngineConfig config;
  config.max_num_seqs = 256;
  auto engine = engine::Engine::Start({model}, config);
  auto captioner = engine::Captioner::Load({model});
  if (!engine.ok() || !captioner.ok()) return 1;
  const auto shape = (*engine)->pixel_shape();

  // 1. Concurrency against serial.
  std::printf("%-12s %14s %14s %9s\n", "concurrent", "engine tok/s", "serial tok/s", "speed-up");
  nlohmann::json rows = nlohmann::json::array();
  uint32_t seed = 0;
  for (int concurrent : {1, 8, 32, 128}) {
    // Medians of 3 runs, fresh images each time (so no run hits the image cache).
    std::vector<double> engine_runs, serial_runs;
    for (int run = 0; run < 3; ++run) {
      std::vector<std::vector<float>> images;
      for (int i = 0; i < concurrent; ++i) images.push_back(RandomImage(shape, ++seed));
      engine_runs.push_back(RunConcurrent(**engine, images, kNewTokens));
      const auto serial_start = Clock::now();
      for (const auto& image : images) {
        engine::CaptionRequest r{image, "", Tokens(kNewTokens)};
        if (!(*captioner)->Generate(r).ok()) return 1;
      }
      serial_runs.push_back(SecondsSince(serial_start));
    }
    const double engine_s = Median(engine_runs);
    const double serial_s = Median(serial_runs);
    const double tokens = double(concurrent) * kNewTokens;
    rows.push_back({{"concurrent", concurrent}, {"new_tokens", kNewTokens}, {"engine_tokens_per_s", tokens / engine_s},
                    {"serial_tokens_per_s", tokens / serial_s}, {"speedup", serial_s / engine_s}});
    std::printf("%-12d %14.0f %14.0f %8.1fx\n", concurrent, tokens / engine_s, tokens / serial_s, serial_s / engine_s);
  }
  report["concurrency"] = rows;

  // 2. Scheduler cost per step, 1,000 running sequences, no model.
  {
    scheduler::SchedulerConfig sc;
    sc.num_blocks = 200000;
    sc.max_num_seqs = 1000;
    sc.max_batched_tokens = 1 << 20;
    scheduler::Scheduler s(sc);
    for (int i = 0; i < 1000; ++i) {
      scheduler::SequenceRequest r;
      r.id = i;
      r.prompt_tokens = 40;
      r.max_new_tokens = 1 << 20;
      s.Add(r);
    }
    s.Update(s.Schedule(), {});  // all admitted
    const int steps = 200;
    const auto start = Clock::now();
    for (int i = 0; i < steps; ++i) s.Update(s.Schedule(), {});
    const double per_step_ms = SecondsSince(start) / steps * 1e3;
    report["scheduler"] = {{"running", s.num_running()}, {"ms_per_step", per_step_ms}};
    std::printf("\nscheduler: %lld running sequences, %.3f ms per step (Schedule + Update)\n",
                static_cast<long long>(s.num_running()), per_step_ms);
  }

  // 3. The image cache: 1,000 requests over 10 distinct images, then 1,000 distinct ones.
  {
    std::printf("\n%-22s %10s %12s %16s\n", "1000 requests over", "seconds", "requests/s", "images encoded");
    nlohmann::json cache_rows = nlohmann::json::array();
    for (int distinct : {10, 1000}) {
      std::vector<std::vector<float>> pool;
      for (int i = 0; i < distinct; ++i) pool.push_back(RandomImage(shape, 100000 + distinct * 7 + i));
      std::vector<std::vector<float>> images;
      for (int i = 0; i < 1000; ++i) images.push_back(pool[i % distinct]);
      const int64_t before = (*engine)->Stats().images_encoded;
      const double s = RunConcurrent(**engine, images, 8);
      const int64_t encoded = (*engine)->Stats().images_encoded - before;
      cache_rows.push_back({{"distinct_images", distinct}, {"requests", 1000}, {"new_tokens", 8}, {"seconds", s},
                            {"requests_per_s", 1000 / s}, {"images_encoded", encoded}});
      std::printf("%-22s %10.2f %12.0f %16lld\n", (std::to_string(distinct) + " distinct images").c_str(), s,
                  1000 / s, static_cast<long long>(encoded));
    }
    report["image_cache"] = cache_rows;
  }
  SaveReport(report.dump(1), flags->Get("out", ""));
  return 0;
}

}  // namespace
}  // namespace blip2::bench

int main(int argc, char** argv) { return blip2::bench::Main(argc, argv); }
