// Retrieval through the engine (what Embed and Match serve), on a retrieval
// checkpoint folder: images/s for Embed (distinct images, all submitted at
// once, so the vision batcher batches them), texts/s for Embed (requests of
// 32 texts), and pairs/s for Match with --texts texts per image (ITC and ITM
// for every pair). Prints a table and writes JSON (--out).
//   retrieval_bench --model DIR [--device cpu|cuda] [--dtype float32|float16|bfloat16]
//                   [--images N] [--texts 100] [--match-images N] [--iters 3] [--out FILE]
#include <cstdio>

#include <nlohmann/json.hpp>

#include "benchmarks/synthetic_model.h"
#include "common/cli_flags.h"
#include "engine/runtime/engine.h"
#include "engine/runtime/retrieval_sink.h"

namespace blip2::bench {
namespace {

// Texts of a caption corpus's length (8 to 16 words), distinct by index.
std::vector<std::string> Texts(int n, int offset) {
  const std::vector<std::string> words = {"a", "photo", "of", "cat", "dog", "on", "the", "table", "red", "car",
                                          "street", "two", "people", "walking", "near", "river", "with", "blue"};
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) {
    std::string t;
    const int len = 8 + (i + offset) % 9;
    for (int w = 0; w < len; ++w) t += (w ? " " : "") + words[(i * 7 + offset * 13 + w * 5) % words.size()];
    out.push_back(t);
  }
  return out;
}

// Submits all requests at once and waits for all; returns seconds.
double RunAll(engine::Engine& engine, std::vector<engine::RetrievalRequest> requests) {
  const auto start = Clock::now();
  std::vector<std::shared_ptr<engine::RetrievalWaiter>> sinks;
  for (auto& r : requests) {
    sinks.push_back(std::make_shared<engine::RetrievalWaiter>());
    if (!engine.SubmitRetrieval(std::move(r), sinks.back()).ok()) std::abort();
  }
  for (auto& s : sinks) {
    if (!s->Wait().ok()) std::abort();
  }
  return SecondsSince(start);
}

int Main(int argc, char** argv) {
  auto flags = common::CliFlags::Parse(std::vector<std::string>(argv + 1, argv + argc),
                                       {"model", "device", "dtype", "images", "texts", "match-images", "iters", "out"},
                                       {});
  if (!flags.ok()) return 2;
  const std::string model = flags->Get("model", BLIP2_DEFAULT_FIXTURES "/blip2-tiny-itm");
  const int images = static_cast<int>(flags->GetInt("images", 64).value_or(64));
  const int texts = static_cast<int>(flags->GetInt("texts", 100).value_or(100));
  const int match_images = static_cast<int>(flags->GetInt("match-images", 8).value_or(8));
  const int iters = static_cast<int>(flags->GetInt("iters", 3).value_or(3));
  engine::EngineConfig config;
  config.vision_max_batch = 64;
  config.max_texts = std::max(texts, 32);
  config.max_text_tokens = 32;  // as LAVIS; the texts here are shorter
  auto engine = engine::Engine::Start({model, flags->Get("device", "cpu"), flags->Get("dtype", "float32")}, config);
  if (!engine.ok()) {
    std::fprintf(stderr, "%s\n", engine.status().ToString().c_str());
    return 1;
  }
  const auto shape = (*engine)->pixel_shape();
  uint32_t seed = 1;
  // Warm-up: one of each.
  RunAll(**engine, {engine::RetrievalRequest{RandomImage(shape, seed++), std::nullopt, Texts(4, 0), true, false}});
  std::vector<double> image_s, text_s, match_s;
  for (int it = 0; it < iters; ++it) {
    std::vector<engine::RetrievalRequest> embed_images;
    for (int i = 0; i < images; ++i) embed_images.push_back({RandomImage(shape, seed++), std::nullopt, {}, false, false});
    image_s.push_back(RunAll(**engine, std::move(embed_images)));
    std::vector<engine::RetrievalRequest> embed_texts;
    for (int i = 0; i < texts * match_images; i += 32) embed_texts.push_back({{}, std::nullopt, Texts(32, i + it), false, false});
    text_s.push_back(RunAll(**engine, std::move(embed_texts)));
    std::vector<engine::RetrievalRequest> match;
    for (int i = 0; i < match_images; ++i) match.push_back({RandomImage(shape, seed++), std::nullopt, Texts(texts, i), true, false});
    match_s.push_back(RunAll(**engine, std::move(match)));
  }
  const double text_count = 32.0 * ((texts * match_images + 31) / 32);
  const nlohmann::json row = {{"model", model},
                              {"device", flags->Get("device", "cpu")},
                              {"dtype", flags->Get("dtype", "float32")},
                              {"embed_images", images},
                              {"embed_images_per_s", images / Median(image_s)},
                              {"embed_texts", text_count},
                              {"embed_texts_per_s", text_count / Median(text_s)},
                              {"match_images", match_images},
                              {"texts_per_image", texts},
                              {"match_pairs_per_s", double(match_images) * texts / Median(match_s)},
                              {"iters", iters},
                              {"images_per_encoder_batch", double((*engine)->Stats().images_encoded) /
                                                               std::max<int64_t>(1, (*engine)->Stats().encoder_batches)}};
  std::printf("%-36s %8s %14s %14s %16s\n", "model", "device", "images/s", "texts/s", "match pairs/s");
  std::printf("%-36s %8s %14.1f %14.1f %16.1f\n", model.substr(model.size() > 36 ? model.size() - 36 : 0).c_str(),
              flags->Get("device", "cpu").c_str(), row["embed_images_per_s"].get<double>(),
              row["embed_texts_per_s"].get<double>(), row["match_pairs_per_s"].get<double>());
  SaveReport(nlohmann::json{{"benchmark", "retrieval"}, {"results", {row}}}.dump(1), flags->Get("out", ""));
  return 0;
}

}  // namespace
}  // namespace blip2::bench

int main(int argc, char** argv) { return blip2::bench::Main(argc, argv); }
