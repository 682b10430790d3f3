// Two latency probes against a running `blip2 serve` (the bundled tiny OPT
// model: see beam_stall.sh):
//  1. the beam stall: a greedy stream's longest gap between tokens, alone and
//     while two 8-beam, 100-token searches run beside it (target: beside at
//     most 3x alone);
//  2. the prefix cache: time to first token of a question on a registered
//     image, first asked and then a different question (same image rows and
//     prompt prefix), with the server's prefix-cache counters.
// Prints a table and writes JSON (--out).
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include <nlohmann/json.hpp>

#include "benchmarks/test_jpeg.h"
#include "blip2.grpc.pb.h"
#include "common/cli_flags.h"

namespace blip2::bench {
namespace {

using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

struct Stream {
  double first_token_ms = 0;
  double longest_gap_ms = 0;
  double mean_gap_ms = 0;
  int64_t tokens = 0;
  bool ok = false;
};

// One streamed Generate; times the arrival of every message with tokens.
Stream RunStream(v1::Blip2::Stub& stub, const v1::GenerateRequest& request) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(300));
  const Clock::time_point start = Clock::now();
  auto reader = stub.Generate(&ctx, request);
  v1::GenerateResponse response;
  Stream s;
  Clock::time_point last;
  while (reader->Read(&response)) {
    if (response.token_ids_size() == 0) continue;
    const Clock::time_point now = Clock::now();
    if (s.tokens == 0) {
      s.first_token_ms = std::chrono::duration<double, std::milli>(now - start).count();
    } else {
      const double gap = std::chrono::duration<double, std::milli>(now - last).count();
      s.longest_gap_ms = std::max(s.longest_gap_ms, gap);
      s.mean_gap_ms += gap;
    }
    last = now;
    s.tokens += response.token_ids_size();
  }
  s.ok = reader->Finish().ok();
  if (s.tokens > 1) s.mean_gap_ms /= static_cast<double>(s.tokens - 1);
  return s;
}

v1::GenerateRequest Greedy(const std::string& jpeg, int tokens) {
  v1::GenerateRequest r;
  r.mutable_image()->set_data(jpeg);
  r.mutable_options()->set_max_new_tokens(tokens);
  r.mutable_options()->set_min_new_tokens(tokens);
  return r;
}

int Main(int argc, char** argv) {
  auto flags = common::CliFlags::Parse(std::vector<std::string>(argv + 1, argv + argc),
                                       {"target", "out", "rounds", "tokens"}, {});
  if (!flags.ok()) return 2;
  const int rounds = static_cast<int>(flags->GetInt("rounds", 5).value_or(5));
  const int tokens = static_cast<int>(flags->GetInt("tokens", 100).value_or(100));
  auto channel = grpc::CreateChannel(flags->Get("target", "127.0.0.1:50051"), grpc::InsecureChannelCredentials());
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(30))) {
    std::fprintf(stderr, "beam_stall: cannot connect\n");
    return 1;
  }
  auto stub = v1::Blip2::NewStub(channel);
  nlohmann::json report = {{"benchmark", "beam_stall"}, {"tokens", tokens}, {"rounds", rounds}};

  // 1. Greedy alone, then beside two 8-beam searches, alternating rounds.
  std::vector<double> alone, beside, alone_mean, beside_mean;
  std::atomic<int> beam_failures{0};
  int overlapped = 0;  // searches run in all
  for (int round = 0; round < rounds; ++round) {
    const Stream a = RunStream(*stub, Greedy(MakeTestJpeg(224, 224, 100 + round), tokens));
    if (!a.ok) return 1;
    alone.push_back(a.longest_gap_ms);
    alone_mean.push_back(a.mean_gap_ms);
    // Two clients search without pause (one 8-beam search after another) from
    // before the greedy stream starts until it ends, so two searches run
    // beside every one of its steps.
    std::atomic<bool> greedy_done{false};
    std::atomic<int> running{0}, searches_done{0};
    std::vector<std::thread> searches;
    for (int b = 0; b < 2; ++b) {
      searches.emplace_back([&, b] {
        // Each client's own image, encoded by the server once (the first search
        // of the first round): what is measured is the searches, not the
        // encoder. The JPEG is made before the loop: making one takes this
        // 2-core machine's second core for milliseconds, which the greedy
        // stream's delivery (gRPC's threads, this client's reader) needs.
        const std::string jpeg = MakeTestJpeg(224, 224, 100000 * (b + 1));
        for (int n = 0; !greedy_done; ++n) {
          v1::GenerateRequest r = Greedy(jpeg, tokens);
          r.mutable_options()->set_num_beams(8);
          r.mutable_options()->set_early_stopping(v1::DecodingOptions::EARLY_STOPPING_NEVER);
          ++running;
          if (!RunStream(*stub, r).ok) ++beam_failures;
          --running;
          ++searches_done;
        }
      });
    }
    while (running < 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // both admitted and stepping
    const Stream g = RunStream(*stub, Greedy(MakeTestJpeg(224, 224, 200 + round), tokens));
    greedy_done = true;
    for (auto& t : searches) t.join();
    if (!g.ok) return 1;
    beside.push_back(g.longest_gap_ms);
    beside_mean.push_back(g.mean_gap_ms);
    overlapped += searches_done.load();
    std::printf("round %d: inter-token gap alone longest %.2f ms (mean %.2f), beside two 8-beam searches longest "
                "%.2f ms (mean %.2f; %d searches ran)\n",
                round + 1, a.longest_gap_ms, a.mean_gap_ms, g.longest_gap_ms, g.mean_gap_ms, searches_done.load());
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double ratio = median(beside) / median(alone);
  std::printf("greedy stream, %d tokens: longest inter-token gap (median of %d) alone %.2f ms, beside %.2f ms: "
              "%.2fx (%d searches in all, %d failed)\n",
              tokens, rounds, median(alone), median(beside), ratio, overlapped, beam_failures.load());
  report["beam_stall"] = {{"alone_longest_gap_ms", alone}, {"beside_longest_gap_ms", beside},
                          {"alone_median_ms", median(alone)}, {"beside_median_ms", median(beside)},
                          {"alone_mean_gap_ms", alone_mean}, {"beside_mean_gap_ms", beside_mean},
                          {"beside_over_alone", ratio}, {"searches", overlapped},
                          {"search_failures", beam_failures.load()}};

  // 2. The prefix cache: questions on one registered image.
  {
    grpc::ClientContext ctx;
    v1::RegisterImageRequest reg;
    reg.set_data(MakeTestJpeg(224, 224, 4242));
    v1::RegisterImageResponse id;
    if (!stub->RegisterImage(&ctx, reg, &id).ok()) return 1;
    auto info = [&] {
      grpc::ClientContext c;
      v1::ModelInfo m;
      stub->GetModelInfo(&c, v1::GetModelInfoRequest(), &m);
      return m;
    };
    const v1::ModelInfo before = info();
    const std::vector<std::string> questions = {"what is in the picture on the wall?", "what is in the picture on the table?",
                                                "what colour is the picture on the wall?"};
    nlohmann::json rows = nlohmann::json::array();
    for (size_t q = 0; q < questions.size(); ++q) {
      v1::GenerateRequest r;
      r.mutable_image()->set_image_id(id.image_id());
      r.set_prompt("Question: " + questions[q] + " Answer:");
      r.mutable_options()->set_max_new_tokens(4);
      const Stream s = RunStream(*stub, r);
      const v1::ModelInfo now = info();
      rows.push_back({{"question", questions[q]}, {"ttft_ms", s.first_token_ms},
                      {"prefix_cache_hits_so_far", now.prefix_cache_hits() - before.prefix_cache_hits()}});
      std::printf("question %zu on the registered image: time to first token %.2f ms, prefix-cache block hits so far %lld\n",
                  q + 1, s.first_token_ms, static_cast<long long>(now.prefix_cache_hits() - before.prefix_cache_hits()));
    }
    report["prefix_cache"] = rows;
    grpc::ClientContext c;
    v1::ReleaseImageRequest rel;
    rel.set_image_id(id.image_id());
    v1::ReleaseImageResponse released;
    stub->ReleaseImage(&c, rel, &released);
  }
  const std::string out = flags->Get("out", "");
  if (!out.empty()) {
    std::FILE* f = std::fopen(out.c_str(), "w");
    if (f != nullptr) {
      std::fputs(report.dump(1).c_str(), f);
      std::fclose(f);
      std::printf("wrote %s\n", out.c_str());
    }
  }
  return 0;
}

}  // namespace
}  // namespace blip2::bench

int main(int argc, char** argv) { return blip2::bench::Main(argc, argv); }
