// Times caption generation with the OPT decoder and its KV cache: time to
// first token, ms per generated token at batch 1, generated tokens/s with 8
// sequences decoded together, and beam search (3 beams) against greedy, on the
// tiny fixture model and on a randomly initialised blip2-opt-2.7b.
// Prints a table and writes JSON (--out).
//
//   generation_bench [--device cpu|cuda] [--dtype float32|float16|bfloat16]
//                    [--new-tokens N] [--batch B] [--iters I] [--out FILE]
//                    [--tiny DIR] [--skip-synthetic] [--skip-tiny] [--model DIR]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <c10/core/InferenceMode.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "benchmarks/synthetic_model.h"
#include "common/cli_flags.h"
#include "engine/model/blip2_model.h"
#include "engine/generation/generator.h"

namespace blip2::bench {
namespace {


struct Options {
  std::string device = "cpu";
  std::string dtype = "float32";
  int64_t new_tokens = 32;
  int64_t batch = 8;
  int iters = 3;
};

void Sync(const engine::Blip2Model& m) {
  if (m.device.is_cuda()) at::empty({1}, at::TensorOptions().device(m.device)).cpu();  // waits for the stream
}

// Greedy or beam generation of exactly `n` new tokens for one image.
struct RunTimes {
  double total_s = 0;
  double first_token_s = 0;
};
RunTimes TimeOne(const engine::Blip2Model& m, const std::vector<float>& pixels, const std::vector<int64_t>& ids,
                 int64_t n, int64_t beams) {
  engine::GenerationParams p;
  p.max_new_tokens = n;
  p.min_new_tokens = n;  // no early stop: every run does the same work
  p.num_beams = beams;
  p.eos_token_ids = m.spec.generation.eos_token_id;
  RunTimes t;
  const auto start = Clock::now();
  engine::GenerationHooks hooks;
  hooks.on_token = [&](int64_t, int64_t, const std::vector<int64_t>& g) {
    if (g.size() == 1) t.first_token_s = SecondsSince(start);
    return false;
  };
  const at::Tensor embeds = m.image_path->Forward(m.PixelBatch({pixels})).projected[0];
  engine::Generate(m.decoder(), m.FirstSteps({engine::EncoderInput{ids, embeds}})[0], p, hooks);
  Sync(m);
  t.total_s = SecondsSince(start);
  return t;
}

// `batch` sequences (one image each) prefilled together, then decoded greedily
// together for `n` steps. Returns decode-only seconds.
double TimeBatch(const engine::Blip2Model& m, const std::vector<float>& pixels, const std::vector<int64_t>& ids,
                 int64_t batch, int64_t n) {
  const at::Tensor embeds = m.image_path->Forward(m.PixelBatch(std::vector<std::vector<float>>(batch, pixels))).projected;
  std::vector<engine::EncoderInput> requests;
  for (int64_t b = 0; b < batch; ++b) requests.push_back({ids, embeds[b]});
  std::vector<engine::DecoderInput> inputs = m.FirstSteps(requests);  // T5: the encoder runs here
  const int64_t first_len = static_cast<int64_t>(inputs[0].token_ids.size());
  engine::KvCache cache = m.decoder().MakeSlotCache(batch, first_len + n);
  for (int64_t b = 0; b < batch; ++b) inputs[b].blocks = cache.SlotBlocks(b);
  at::Tensor logits = m.decoder().Step(inputs, cache);
  Sync(m);
  const auto start = Clock::now();
  for (int64_t s = 0; s < n; ++s) {
    const at::Tensor next = logits.argmax(-1).cpu();
    for (int64_t b = 0; b < batch; ++b) {
      inputs[b].cached = first_len + s;
      inputs[b].token_ids = {next[b].item<int64_t>()};
      inputs[b].image_embeds = at::Tensor();
    }
    if (s + 1 < n) logits = m.decoder().Step(inputs, cache);
  }
  Sync(m);
  return SecondsSince(start);
}

nlohmann::json Measure(const std::string& label, const std::string& dir, const Options& opt) {
  auto model = engine::Blip2Model::Load({dir, opt.device, opt.dtype}, /*with_language_model=*/true);
  if (!model.ok()) {
    std::fprintf(stderr, "%s: %s\n", label.c_str(), model.status().ToString().c_str());
    return nullptr;
  }
  const engine::Blip2Model& m = **model;
  c10::InferenceMode guard;
  const auto& v = m.spec.config.vision;
  const std::vector<float> pixels(v.num_channels * v.image_size * v.image_size, 0.1f);
  // A caption prompt: the <image> placeholders, then the empty prompt's ids.
  const std::vector<int64_t> ids = *m.InputIds("", 1 << 20, opt.new_tokens);
  const int64_t n = opt.new_tokens;
  TimeOne(m, pixels, ids, 2, 1);  // warm-up
  std::vector<double> ttft, per_token, greedy_total, beam_total, batch_decode;
  for (int i = 0; i < opt.iters; ++i) {
    const RunTimes g = TimeOne(m, pixels, ids, n, 1);
    ttft.push_back(g.first_token_s);
    per_token.push_back((g.total_s - g.first_token_s) / double(n - 1));
    greedy_total.push_back(g.total_s);
    beam_total.push_back(TimeOne(m, pixels, ids, n, 3).total_s);
    batch_decode.push_back(TimeBatch(m, pixels, ids, opt.batch, n));
  }
  nlohmann::json row = {{"model", label},
                        {"device", opt.device},
                        {"dtype", opt.dtype},
                        {"prompt_tokens", ids.size()},
                        {"new_tokens", n},
                        {"time_to_first_token_ms", Median(ttft) * 1e3},
                        {"ms_per_token_batch1", Median(per_token) * 1e3},
                        {"batch", opt.batch},
                        {"tokens_per_s_batch", opt.batch * (n - 1) / Median(batch_decode)},
                        {"greedy_total_s", Median(greedy_total)},
                        {"beam3_total_s", Median(beam_total)},
                        {"beam3_over_greedy", Median(beam_total) / Median(greedy_total)},
                        {"iters", opt.iters}};
  std::printf("%-26s %-5s %-8s %9.1f %11.2f %13.1f %10.2fx\n", label.c_str(), opt.device.c_str(),
              opt.dtype.c_str(), row["time_to_first_token_ms"].get<double>(), row["ms_per_token_batch1"].get<double>(),
              row["tokens_per_s_batch"].get<double>(), row["beam3_over_greedy"].get<double>());
  std::fflush(stdout);
  return row;
}

int Main(int argc, char** argv) {
  auto flags = common::CliFlags::Parse(std::vector<std::string>(argv + 1, argv + argc),
                                       {"device", "dtype", "new-tokens", "batch", "iters", "out", "tiny", "model"},
                                       {"skip-synthetic", "skip-tiny"});
  if (!flags.ok()) {
    std::fprintf(stderr, "%s\n", flags.status().ToString().c_str());
    return 2;
  }
  Options opt;
  opt.device = flags->Get("device", opt.device);
  opt.dtype = flags->Get("dtype", opt.dtype);
  opt.new_tokens = flags->GetInt("new-tokens", opt.new_tokens).value_or(opt.new_tokens);
  opt.batch = flags->GetInt("batch", opt.batch).value_or(opt.batch);
  opt.iters = static_cast<int>(flags->GetInt("iters", opt.iters).value_or(opt.iters));
  nlohmann::json report = {{"benchmark", "generation"},
                           {"torch", TORCH_VERSION},
                           {"cpu_capability", at::get_cpu_capability()},
                           {"torch_intra_op_threads", at::get_num_threads()},
                           {"results", nlohmann::json::array()}};
  std::printf("%-26s %-5s %-8s %9s %11s %13s %11s\n", "model", "dev", "dtype", "TTFT ms", "ms/token b1",
              ("tok/s b" + std::to_string(opt.batch)).c_str(), "beam3/greedy");
  auto add = [&](const nlohmann::json& row) {
    if (!row.is_null()) report["results"].push_back(row);
  };
  const absl::Status status = ForEachBenchModel(
      *flags, BLIP2_DEFAULT_FIXTURES "/blip2-tiny-opt", /*with_language_model=*/true, "blip2-opt-2.7b (random)",
      [&](const std::string& label, const std::string& dir) { add(Measure(label, dir, opt)); });
  if (!status.ok()) {
    std::fprintf(stderr, "%s\n", status.ToString().c_str());
    return 1;
  }
  SaveReport(report.dump(1), flags->Get("out", ""));
  return 0;
}

}  // namespace
}  // namespace blip2::bench

int main(int argc, char** argv) { return blip2::bench::Main(argc, argv); }
