// Times the BLIP-2 image path: decode + preprocess of a 640x480 JPEG, and the
// encoder (vision + Q-Former + projection) at several batch sizes, on the tiny
// fixture model and on a randomly initialised model of blip2-opt-2.7b's
// image-path shape. Prints a table and writes JSON (--out).
//
//   image_path_bench [--device cpu|cuda] [--dtype float32|float16|bfloat16]
//                    [--batches 1,8] [--iters 3] [--out FILE] [--tiny DIR]
//                    [--skip-synthetic] [--skip-tiny] [--model DIR]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "benchmarks/synthetic_model.h"
#include "common/cli_flags.h"
#include "engine/model/image_encoder.h"
#include "engine/model/image_preprocessor.h"
#ifdef BLIP2_WITH_IMAGING
#include "benchmarks/test_jpeg.h"
#include "server/imaging/image_decoder.h"
#endif

namespace blip2::bench {
namespace {


struct Options {
  std::string device = "cpu";
  std::string dtype = "float32";
  std::vector<int> batches = {1, 8};
  int iters = 3;
};

// Encoder-only timing at each batch size: one warm-up, then the median of `iters`.
nlohmann::json TimeEncoder(const std::string& label, const std::string& model_dir, const Options& opt,
                           double preprocess_s_per_image) {
  nlohmann::json rows = nlohmann::json::array();
  const auto load_start = Clock::now();
  auto encoder = engine::ImageEncoder::Load({model_dir, opt.device, opt.dtype});
  if (!encoder.ok()) {
    std::fprintf(stderr, "%s: %s\n", label.c_str(), encoder.status().ToString().c_str());
    return rows;
  }
  const double load_s = SecondsSince(load_start);
  const auto shape = (*encoder)->pixel_shape();
  const std::vector<float> image(shape[0] * shape[1] * shape[2], 0.1f);
  for (int batch : opt.batches) {
    const std::vector<std::vector<float>> pixels(batch, image);
    if (!(*encoder)->Encode(pixels).ok()) return rows;  // warm-up
    std::vector<double> times;
    for (int i = 0; i < opt.iters; ++i) {
      const auto start = Clock::now();
      auto out = (*encoder)->Encode(pixels);
      if (!out.ok()) return rows;
      times.push_back(SecondsSince(start));
    }
    const double s = Median(times);
    nlohmann::json row = {{"model", label},          {"device", opt.device},       {"dtype", opt.dtype},
                          {"batch", batch},          {"encoder_ms", s * 1e3},      {"encoder_images_per_s", batch / s},
                          {"load_s", load_s},        {"iters", opt.iters}};
    if (preprocess_s_per_image > 0) {
      // Decode and preprocess run on the CPU pool, one image per thread; this is
      // the single-threaded, sequential figure: a lower bound.
      row["end_to_end_images_per_s_single_thread"] = batch / (s + batch * preprocess_s_per_image);
    }
    std::printf("%-28s %-6s %-9s %5d %12.2f %14.2f\n", label.c_str(), opt.device.c_str(), opt.dtype.c_str(), batch,
                s * 1e3, batch / s);
    std::fflush(stdout);
    rows.push_back(row);
  }
  return rows;
}

int Main(int argc, char** argv) {
  auto flags = common::CliFlags::Parse(std::vector<std::string>(argv + 1, argv + argc),
                                       {"device", "dtype", "batches", "iters", "out", "tiny", "model"},
                                       {"skip-synthetic", "skip-tiny"});
  if (!flags.ok()) {
    std::fprintf(stderr, "%s\n", flags.status().ToString().c_str());
    return 2;
  }
  Options opt;
  opt.device = flags->Get("device", opt.device);
  opt.dtype = flags->Get("dtype", opt.dtype);
  opt.iters = static_cast<int>(flags->GetInt("iters", opt.iters).value_or(opt.iters));
  if (flags->Has("batches")) {
    opt.batches.clear();
    for (absl::string_view b : absl::StrSplit(flags->Get("batches", ""), ',')) {
      int v = 0;
      if (absl::SimpleAtoi(b, &v) && v > 0) opt.batches.push_back(v);
    }
  }
  nlohmann::json report = {
      {"benchmark", "image_path"},
      {"torch", TORCH_VERSION},
      {"cpu_capability", at::get_cpu_capability()},
      {"hardware_threads", std::thread::hardware_concurrency()},
      {"torch_intra_op_threads", at::get_num_threads()},
      {"results", nlohmann::json::array()}};

  double preprocess_s = 0;
#ifdef BLIP2_WITH_IMAGING
  {
    const std::string jpeg = MakeTestJpeg(640, 480);
    auto config = engine::ImageProcessorConfig{};
    config.height = config.width = 224;
    const int n = 50;
    const auto start = Clock::now();
    for (int i = 0; i < n; ++i) {
      auto rgb = server::DecodeImage(jpeg, {});
      auto px = engine::PreprocessImage(*rgb, config);
      if (!px.ok()) return 1;
    }
    preprocess_s = SecondsSince(start) / n;
    report["decode_preprocess"] = {{"image", "640x480 JPEG, quality 90"},
                                   {"images_per_s_single_thread", 1.0 / preprocess_s},
                                   {"ms_per_image", preprocess_s * 1e3}};
    std::printf("decode + preprocess 640x480 JPEG -> 224x224: %.2f ms/image, %.1f images/s (one thread)\n\n",
                preprocess_s * 1e3, 1.0 / preprocess_s);
  }
#endif
  std::printf("%-28s %-6s %-9s %5s %12s %14s\n", "model", "device", "dtype", "batch", "ms/batch", "images/s");
  auto append = [&](const nlohmann::json& rows) {
    for (const auto& r : rows) report["results"].push_back(r);
  };
  const absl::Status status = ForEachBenchModel(
      *flags, BLIP2_DEFAULT_FIXTURES "/blip2-tiny-opt", /*with_language_model=*/false, "blip2-opt-2.7b image path (random)",
      [&](const std::string& label, const std::string& dir) { append(TimeEncoder(label, dir, opt, preprocess_s)); });
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
