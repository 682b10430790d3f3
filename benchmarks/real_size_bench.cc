// Our side of the real-size benchmark (benchmarks/real_size.py runs it beside
// transformers on the same checkpoint): one checkpoint, one dtype and
// quantization, through the serving engine.
//
//   real_size_bench --model DIR [--dtype bfloat16] [--quantization none|int8]
//       [--threads N] [--new-tokens 20] [--concurrency 1,4,8,16] [--out FILE]
//
// Measures, in this order:
//   time to ready: Engine::Start (load) and one 2-token caption (warm-up);
//   memory: peak RSS during load (VmHWM), then steady RSS split into
//     anonymous and file-backed (RssAnon, RssFile), with the KV and image
//     cache budgets they include;
//   time to first token and ms/token at batch 1: captions of 1 and of
//     --new-tokens tokens, one at a time, (t(N) - t(1)) / (N - 1), medians;
//   captions/s with C captions in flight for each C in --concurrency
//     (distinct images, exactly --new-tokens tokens each).
// Prints a table and writes JSON; asserts nothing about time.
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/cli_flags.h"
#include "engine/runtime/engine.h"
#include "engine/runtime/waiting_sink.h"

namespace blip2::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// Named fields of /proc/self/status, in bytes (they are given in kB).
int64_t StatusBytes(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string key;
  while (status >> key) {
    if (key == field + ":") {
      int64_t kb = 0;
      status >> kb;
      return kb * 1024;
    }
  }
  return -1;
}

nlohmann::json Memory() {
  return {{"peak_rss_gb", StatusBytes("VmHWM") / 1e9},
          {"rss_gb", StatusBytes("VmRSS") / 1e9},
          {"rss_anon_gb", StatusBytes("RssAnon") / 1e9},
          {"rss_file_gb", StatusBytes("RssFile") / 1e9}};
}

// A distinct image per index (no image-cache hits between requests).
std::vector<float> Pixels(const std::vector<int64_t>& shape, int index) {
  std::vector<float> pixels(shape[0] * shape[1] * shape[2]);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<float>((i * 7 + index * 131) % 255) / 128.0f - 1;
  return pixels;
}

struct Run {
  double seconds = 0;
  double ttft_ms = 0;  // the first request's
};

// Submits `count` captions of exactly `tokens` tokens at once; waits for all.
Run Captions(engine::Engine& engine, const std::vector<int64_t>& shape, int count, int64_t tokens, int first_image) {
  std::vector<std::shared_ptr<engine::WaitingSink>> sinks;
  const auto start = Clock::now();
  for (int i = 0; i < count; ++i) {
    engine::EngineRequest request;
    request.pixels = Pixels(shape, first_image + i);
    request.overrides.max_new_tokens = tokens;
    request.overrides.min_new_tokens = tokens;
    sinks.push_back(std::make_shared<engine::WaitingSink>());
    const auto submitted = engine.Submit(std::move(request), sinks.back());
    if (!submitted.ok()) {
      std::fprintf(stderr, "submit: %s\n", submitted.status().ToString().c_str());
      std::exit(1);
    }
  }
  for (const auto& sink : sinks) {
    const auto result = sink->Wait();
    if (!result.ok()) {
      std::fprintf(stderr, "caption: %s\n", result.status().ToString().c_str());
      std::exit(1);
    }
  }
  return {Since(start), sinks.front()->usage().time_to_first_token_ms};
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int Main(int argc, char** argv) {
  auto flags = common::CliFlags::Parse(std::vector<std::string>(argv + 1, argv + argc),
                                       {"model", "dtype", "quantization", "threads", "new-tokens", "concurrency",
                                        "iters", "kv-cache-mb", "out"});
  if (!flags.ok() || !flags->Has("model")) {
    std::fprintf(stderr, "usage: real_size_bench --model DIR [--dtype D] [--quantization none|int8] [--threads N]\n"
                         "  [--new-tokens N] [--concurrency 1,4,8,16] [--iters 3] [--kv-cache-mb 512] [--out FILE]\n%s\n",
                 flags.ok() ? "" : flags.status().ToString().c_str());
    return 2;
  }
  engine::EngineOptions options{flags->Get("model", ""), "cpu", flags->Get("dtype", "bfloat16"),
                                flags->Get("quantization", "")};
  int threads = 0, iters = 3;
  int64_t new_tokens = 20, kv_mb = 512;
  (void)absl::SimpleAtoi(flags->Get("threads", "0"), &threads);
  (void)absl::SimpleAtoi(flags->Get("iters", "3"), &iters);
  (void)absl::SimpleAtoi(flags->Get("new-tokens", "20"), &new_tokens);
  (void)absl::SimpleAtoi(flags->Get("kv-cache-mb", "512"), &kv_mb);
  std::vector<int> concurrency;
  for (absl::string_view c : absl::StrSplit(flags->Get("concurrency", "1,4,8,16"), ',', absl::SkipEmpty())) {
    int n = 0;
    if (absl::SimpleAtoi(c, &n) && n > 0) concurrency.push_back(n);
  }
  if (threads > 0) at::set_num_threads(threads);
  engine::EngineConfig config;
  config.kv_cache_bytes = kv_mb << 20;
  config.image_cache_bytes = 64ll << 20;

  nlohmann::json out = {{"model", options.model_dir}, {"dtype", options.dtype},
                        {"quantization", options.quantization.empty() ? "none" : options.quantization},
                        {"threads", at::get_num_threads()}, {"new_tokens", new_tokens},
                        {"kv_cache_gb", config.kv_cache_bytes / 1e9}, {"image_cache_gb", config.image_cache_bytes / 1e9}};
  const auto start = Clock::now();
  auto engine = engine::Engine::Start(options, config);
  if (!engine.ok()) {
    std::fprintf(stderr, "start: %s\n", engine.status().ToString().c_str());
    return 1;
  }
  out["load_s"] = Since(start);
  out["memory_after_load"] = Memory();
  const std::vector<int64_t> shape = (*engine)->pixel_shape();
  const auto warm = Clock::now();
  Captions(**engine, shape, 1, 2, 0);
  out["warmup_s"] = Since(warm);
  out["ready_s"] = Since(start);
  out["memory_ready"] = Memory();
  std::printf("ready in %.1f s (load %.1f s); peak RSS %.2f GB, RSS %.2f GB (anonymous %.2f, file %.2f)\n",
              out["ready_s"].get<double>(), out["load_s"].get<double>(), out["memory_ready"]["peak_rss_gb"].get<double>(),
              out["memory_ready"]["rss_gb"].get<double>(), out["memory_ready"]["rss_anon_gb"].get<double>(),
              out["memory_ready"]["rss_file_gb"].get<double>());

  std::vector<double> first, full, ttft;
  int image = 1;
  for (int i = 0; i < iters; ++i) {
    const Run one = Captions(**engine, shape, 1, 1, image++);
    first.push_back(one.seconds);
    ttft.push_back(one.ttft_ms);
    full.push_back(Captions(**engine, shape, 1, new_tokens, image++).seconds);
  }
  out["ttft_s"] = Median(first);
  out["engine_ttft_ms"] = Median(ttft);
  out["ms_per_token_batch1"] = (Median(full) - Median(first)) / static_cast<double>(new_tokens - 1) * 1e3;
  std::printf("batch 1: time to first token %.3f s, %.1f ms/token\n", out["ttft_s"].get<double>(),
              out["ms_per_token_batch1"].get<double>());
  nlohmann::json rows = nlohmann::json::array();
  for (int c : concurrency) {
    const Run run = Captions(**engine, shape, c, new_tokens, image);
    image += c;
    rows.push_back({{"concurrent", c}, {"seconds", run.seconds}, {"captions_per_s", c / run.seconds}});
    std::printf("%3d concurrent: %.2f s, %.3f captions/s\n", c, run.seconds, c / run.seconds);
  }
  out["concurrent"] = rows;
  out["memory_end"] = Memory();
  const std::string path = flags->Get("out", "");
  if (!path.empty()) std::ofstream(path) << out.dump(1) << "\n";
  std::fflush(stdout);
  // Exit without tearing down: a 10 GB model's destructors only cost time here.
  std::_Exit(0);
}

}  // namespace
}  // namespace blip2::bench

int main(int argc, char** argv) { return blip2::bench::Main(argc, argv); }
