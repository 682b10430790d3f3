// The demo model through the real server: every held-out scene of each trained
// fixture model (heldout.json beside its weights) is sent as a PNG file to
// Caption and, for each of its questions, to Answer, from eight client threads
// at once, float32 on the CPU; at least 90% of captions and of answers must be
// right; then again with the language model in int8 (quantization: int8 in
// the server's config). tests/parity/semantic_test.cc checks the same through
// the engine in other dtypes and on the GPU.
#include <atomic>
#include <mutex>
#include <thread>
#include <tuple>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "tests/catch.h"
#include "tests/parity/heldout_set.h"
#include "tests/server/server_fixture.h"
#include "tests/test_support.h"

namespace blip2::testing {
namespace {

std::string Png(const engine::RgbImage& image) {
  cv::Mat rgb(int(image.height), int(image.width), CV_8UC3, const_cast<uint8_t*>(image.pixels.data()));
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  std::vector<uchar> bytes;
  REQUIRE(cv::imencode(".png", bgr, bytes));
  return std::string(bytes.begin(), bytes.end());
}

TEST_CASE("semantic: the demo model captions and answers held-out scenes correctly through the server") {
  const std::vector<HeldoutSet> sets = DiscoverHeldoutSets(FixturesDir());
  REQUIRE_FALSE(sets.empty());
  std::vector<std::pair<const HeldoutSet*, std::string>> runs;  // each set, dense then int8
  for (const HeldoutSet& set : sets) {
    for (const char* quantization : {"none", "int8"}) runs.emplace_back(&set, quantization);
  }
  for (const auto& [set_pointer, quantization] : runs) {
    const HeldoutSet& set = *set_pointer;
    config::ServerConfig cfg = TestConfig(set.model_dir);
    cfg.set_quantization(quantization);
    TestServer server(cfg);
    std::mutex mu;
    Score captions, answers;
    std::vector<std::string> failures;
    std::atomic<size_t> next{0};
    // One scene's calls, then its results scored under the lock.
    auto client = [&] {
      for (size_t i = next++; i < set.items.size(); i = next++) {
        const HeldoutItem& item = set.items[i];
        const std::string png = Png(item.image);
        const std::string label = "scene " + std::to_string(i);
        std::vector<std::tuple<std::string, grpc::Status, v1::Completion>> calls;  // what, status, output
        {
          v1::CaptionRequest request;
          request.mutable_image()->set_data(png);
          grpc::ClientContext ctx;
          v1::Completion out;
          const grpc::Status status = server.stub().Caption(&ctx, request, &out);
          calls.emplace_back(item.caption, status, out);
        }
        for (const auto& [question, answer] : item.questions) {
          v1::AnswerRequest request;
          request.mutable_image()->set_data(png);
          request.set_question(question);
          grpc::ClientContext ctx;
          v1::Completion out;
          const grpc::Status status = server.stub().Answer(&ctx, request, &out);
          calls.emplace_back(answer, status, out);
        }
        std::lock_guard<std::mutex> lock(mu);
        for (size_t c = 0; c < calls.size(); ++c) {
          const auto& [expected, status, out] = calls[c];
          const std::string what = c == 0 ? label + " caption" : label + " \"" + item.questions[c - 1].first + "\"";
          if (!status.ok() || out.sequences_size() != 1) {
            failures.push_back(what + ": " + status.error_message());
            continue;
          }
          (c == 0 ? captions : answers).Add(expected, out.sequences(0).text(), what);
        }
      }
    };
    std::vector<std::thread> clients;
    for (int i = 0; i < 8; ++i) clients.emplace_back(client);
    for (std::thread& t : clients) t.join();
    INFO(failures.size() << " calls failed, first: " << (failures.empty() ? "" : failures[0]));
    CHECK(failures.empty());
    CHECK(captions.total() == static_cast<int>(set.items.size()));
    CheckMostlyRight(set.name + " through gRPC (float32, quantization " + quantization + ", cpu)", captions, answers);
  }
}

}  // namespace
}  // namespace blip2::testing
