// A gRPC load generator for blip2-serve (C++, gRPC's asynchronous callback
// client). Closed loop: N calls always in flight, a new one as each ends.
// Open loop: calls arrive as a Poisson process at a given rate, whatever the
// server's pace. Reports requests/s, generated tokens/s, time to first token
// and inter-token latency (p50/p90/p99) and errors by status, as a table and
// JSON. Never asserts timings.
//
//   build/benchmarks/grpc_load --target 127.0.0.1:50051 --concurrency 1,8,32,128 --requests 512
//   build/benchmarks/grpc_load --target HOST:PORT --mode open --rate 200,400 --seconds 10
//   build/benchmarks/grpc_load --target localhost:50051 --ca ca.pem ...   (TLS)
//   ... --priorities 0:0.05,5:0.95: request priorities by share; the report
//   then splits results by priority (benchmarks/overload.py uses this).
// Every call has a deadline (--deadline-s, default 120). A failed call is
// counted by its status code (with the first message of each code), never
// fatal: the exit code is 0 whenever the report was written.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "benchmarks/load_stats.h"
#include "benchmarks/test_jpeg.h"
#include "blip2.grpc.pb.h"
#include "common/cli_flags.h"
#include "common/file_util.h"

namespace blip2::bench {
namespace {


// What one finished call measured.
struct Outcome {
  int priority = 0;
  grpc::StatusCode code = grpc::StatusCode::OK;
  std::string message;
  int64_t tokens = 0, messages = 0;
  double ttft_ms = 0, latency_ms = 0;
  std::vector<double> itl_ms;
};

// What every call records, under one lock.
struct Results {
  std::mutex mu;
  std::condition_variable done_cv;
  int64_t finished = 0;
  int64_t tokens = 0;
  int64_t messages = 0;
  std::vector<double> ttft_ms, itl_ms, latency_ms;
  std::map<std::string, int64_t> errors;          // status code name -> calls
  std::map<std::string, std::string> error_text;  // status code name -> the first message with it
  std::map<std::string, std::vector<double>> error_latency_ms;  // status code name -> how fast it came
  // By request priority: the OK calls' time to first token, and the failed calls by code.
  std::map<int, std::vector<double>> ttft_ms_by_priority;
  std::map<int, std::map<std::string, int64_t>> errors_by_priority;

  void Record(const Outcome& o) {
    std::lock_guard<std::mutex> lock(mu);
    ++finished;
    messages += o.messages;
    if (o.code == grpc::StatusCode::OK) {
      tokens += o.tokens;
      ttft_ms.push_back(o.ttft_ms);
      latency_ms.push_back(o.latency_ms);
      itl_ms.insert(itl_ms.end(), o.itl_ms.begin(), o.itl_ms.end());
      ttft_ms_by_priority[o.priority].push_back(o.ttft_ms);
    } else {
      const std::string code = absl::StatusCodeToString(static_cast<absl::StatusCode>(o.code));
      ++errors[code];
      error_text.emplace(code, o.message);
      error_latency_ms[code].push_back(o.latency_ms);
      ++errors_by_priority[o.priority][code];
    }
    done_cv.notify_all();  // under the lock: the runner may return (and free this) right after
  }
};

struct Workload {
  v1::Blip2::Stub* stub;
  int new_tokens;
  int image_size;
  int64_t distinct;  // images per level
  double deadline_s;  // per call: a hung server shows as DEADLINE_EXCEEDED, not a hung benchmark
  // Request priorities and their shares (--priorities 0:0.05,5:0.95); empty: all 0.
  std::vector<std::pair<int, double>> priorities;

  // Call `index`'s priority: a fixed draw per index, so runs repeat.
  int PriorityOf(int64_t index) const {
    if (priorities.empty()) return 0;
    std::mt19937_64 rng(static_cast<uint64_t>(index) * 0x9E3779B97F4A7C15ull + 1);
    double u = std::uniform_real_distribution<double>(0, 1)(rng);
    for (const auto& [priority, share] : priorities) {
      if (u < share) return priority;
      u -= share;
    }
    return priorities.back().first;
  }
};

// Distinct JPEGs for one level; `first_seed` differs per level and per run so
// the server's image cache never answers from an earlier level.
std::vector<std::string> MakeImages(const Workload& w, int first_seed) {
  std::vector<std::string> images;
  for (int64_t i = 0; i < w.distinct; ++i) images.push_back(MakeTestJpeg(w.image_size, w.image_size, first_seed + static_cast<int>(i)));
  return images;
}

// One Generate call; records its timings, then tells `on_end`.
class Call : public grpc::ClientReadReactor<v1::GenerateResponse> {
 public:
  Call(const Workload& w, const std::vector<std::string>& images, int64_t index, Results* results,
       std::function<void()> on_end)
      : results_(results), on_end_(std::move(on_end)) {
    request_.mutable_image()->set_data(images[static_cast<size_t>(index) % images.size()]);
    request_.mutable_options()->set_max_new_tokens(w.new_tokens);
    request_.mutable_options()->set_min_new_tokens(w.new_tokens);
    request_.set_priority(w.PriorityOf(index));
    start_ = last_ = Clock::now();
    ctx_.set_deadline(std::chrono::system_clock::now() +
                      std::chrono::duration_cast<std::chrono::system_clock::duration>(
                          std::chrono::duration<double>(w.deadline_s)));
    w.stub->async()->Generate(&ctx_, &request_, this);
    StartRead(&response_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows
    const Clock::time_point now = Clock::now();
    const int n = response_.token_ids_size();
    if (n > 0) {
      if (tokens_ == 0) {
        ttft_ms_ = Seconds(start_, now) * 1e3;
      } else {
        // A message carrying several tokens (coalesced) spreads its gap over them.
        for (int i = 0; i < n; ++i) itl_ms_.push_back(Seconds(last_, now) * 1e3 / n);
      }
      tokens_ += n;
      last_ = now;
    }
    ++messages_;
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& status) override {
    Outcome outcome;
    outcome.priority = request_.priority();
    outcome.code = status.error_code();
    outcome.message = status.error_message();
    outcome.tokens = tokens_;
    outcome.messages = messages_;
    outcome.ttft_ms = ttft_ms_;
    outcome.latency_ms = Seconds(start_, Clock::now()) * 1e3;
    outcome.itl_ms = std::move(itl_ms_);
    Results* results = results_;
    const std::function<void()> on_end = std::move(on_end_);
    // This call (its ClientContext above all) is gone before anyone is told:
    // once the last one is counted the runner returns, and the process may
    // tear gRPC down. A context destroyed after that once aborted the
    // generator ("ref_counted.h: assertion failed: prior > 0") at exit.
    delete this;
    // The next call starts before this one is counted, so the runner never
    // sees all calls counted while one is still being launched.
    if (on_end) on_end();
    results->Record(outcome);
  }

 private:
  Results* results_;
  std::function<void()> on_end_;
  grpc::ClientContext ctx_;
  v1::GenerateRequest request_;
  v1::GenerateResponse response_;
  Clock::time_point start_, last_;
  int64_t tokens_ = 0, messages_ = 0;
  double ttft_ms_ = 0;
  std::vector<double> itl_ms_;
};

nlohmann::json Summarize(Results& r, double seconds, const std::string& mode, double level, int new_tokens) {
  std::lock_guard<std::mutex> lock(r.mu);
  const int64_t ok = static_cast<int64_t>(r.latency_ms.size());
  nlohmann::json row = {{"mode", mode},
                        {mode == "closed" ? "concurrent" : "rate_per_s", level},
                        {"new_tokens", new_tokens},
                        {"requests", r.finished},
                        {"ok", ok},
                        {"errors", r.errors},
                        {"error_messages", r.error_text},
                        {"seconds", seconds},
                        {"requests_per_s", ok / seconds},
                        {"tokens_per_s", static_cast<double>(r.tokens) / seconds},
                        {"tokens_per_message", r.messages > 0 ? static_cast<double>(r.tokens) / r.messages : 0.0},
                        {"ttft_ms", {{"p50", Percentile(r.ttft_ms, 0.5)}, {"p90", Percentile(r.ttft_ms, 0.9)},
                                     {"p99", Percentile(r.ttft_ms, 0.99)}}},
                        {"itl_ms", {{"p50", Percentile(r.itl_ms, 0.5)}, {"p90", Percentile(r.itl_ms, 0.9)},
                                    {"p99", Percentile(r.itl_ms, 0.99)}}},
                        {"latency_ms", {{"p50", Percentile(r.latency_ms, 0.5)}, {"p99", Percentile(r.latency_ms, 0.99)}}}};
  // How long failed calls took to fail (a refusal should come at once).
  for (const auto& [code, ms] : r.error_latency_ms) {
    row["error_latency_ms"][code] = {{"p50", Percentile(ms, 0.5)}, {"p99", Percentile(ms, 0.99)}};
  }
  std::set<int> priorities;
  for (const auto& [p, v] : r.ttft_ms_by_priority) priorities.insert(p);
  for (const auto& [p, e] : r.errors_by_priority) priorities.insert(p);
  if (priorities.size() > 1 || (priorities.size() == 1 && *priorities.begin() != 0)) {
    for (int p : priorities) {
      const std::vector<double>& ttft = r.ttft_ms_by_priority[p];
      row["by_priority"][std::to_string(p)] = {
          {"ok", ttft.size()},
          {"errors", r.errors_by_priority[p]},
          {"ttft_ms", {{"p50", Percentile(ttft, 0.5)}, {"p90", Percentile(ttft, 0.9)}, {"p99", Percentile(ttft, 0.99)}}}};
      int64_t failed = 0;
      for (const auto& [code, n] : r.errors_by_priority[p]) failed += n;
      std::printf("       priority %d: %zu ok (ttft p50 %.1f p99 %.1f ms), %lld failed\n", p, ttft.size(),
                  Percentile(ttft, 0.5), Percentile(ttft, 0.99), static_cast<long long>(failed));
    }
  }
  int64_t errors = 0;
  for (const auto& [code, n] : r.errors) errors += n;
  std::printf("%-6s %8g %8lld %6lld %10.1f %10.0f %8.1f %8.1f %8.1f %8.2f %8.2f %8.2f\n", mode.c_str(), level,
              static_cast<long long>(r.finished), static_cast<long long>(errors), ok / seconds,
              static_cast<double>(r.tokens) / seconds, Percentile(r.ttft_ms, 0.5), Percentile(r.ttft_ms, 0.9),
              Percentile(r.ttft_ms, 0.99), Percentile(r.itl_ms, 0.5), Percentile(r.itl_ms, 0.9),
              Percentile(r.itl_ms, 0.99));
  for (const auto& [code, n] : r.errors) {
    std::printf("       %lld calls failed with %s in p50 %.2f p99 %.2f ms (first: %s)\n", static_cast<long long>(n),
                code.c_str(), Percentile(r.error_latency_ms.at(code), 0.5), Percentile(r.error_latency_ms.at(code), 0.99),
                r.error_text.at(code).c_str());
  }
  std::fflush(stdout);
  return row;
}

// `total` calls, `concurrent` in flight at all times.
nlohmann::json RunClosed(const Workload& w, const std::vector<std::string>& images, int concurrent, int64_t total) {
  Results results;
  std::atomic<int64_t> next{0};
  std::function<void()> launch = [&] {
    const int64_t i = next.fetch_add(1);
    if (i < total) new Call(w, images, i, &results, launch);
  };
  const Clock::time_point start = Clock::now();
  for (int i = 0; i < concurrent; ++i) launch();
  std::unique_lock<std::mutex> lock(results.mu);
  results.done_cv.wait(lock, [&] { return results.finished == total; });
  lock.unlock();
  return Summarize(results, Seconds(start, Clock::now()), "closed", concurrent, w.new_tokens);
}

// Calls arriving as a Poisson process at `rate` per second for `seconds`.
nlohmann::json RunOpen(const Workload& w, const std::vector<std::string>& images, double rate, double seconds) {
  Results results;
  std::mt19937_64 rng(42);
  std::exponential_distribution<double> gap(rate);
  const Clock::time_point start = Clock::now();
  Clock::time_point at = start;
  int64_t launched = 0;
  while (Seconds(start, at) < seconds) {
    std::this_thread::sleep_until(at);
    new Call(w, images, launched++, &results, nullptr);
    at += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap(rng)));
  }
  std::unique_lock<std::mutex> lock(results.mu);
  results.done_cv.wait(lock, [&] { return results.finished == launched; });
  lock.unlock();
  return Summarize(results, Seconds(start, Clock::now()), "open", rate, w.new_tokens);
}

std::vector<double> Levels(const std::string& list) {
  std::vector<double> out;
  for (absl::string_view s : absl::StrSplit(list, ',')) {
    double v = 0;
    if (!absl::SimpleAtod(s, &v) || v <= 0) {
      std::fprintf(stderr, "grpc_load: bad level \"%s\"\n", std::string(s).c_str());
      std::exit(2);
    }
    out.push_back(v);
  }
  return out;
}

int Main(int argc, char** argv) {
  auto flags = common::CliFlags::Parse(std::vector<std::string>(argv + 1, argv + argc),
                                       {"target", "lb", "mode", "concurrency", "rate", "requests", "seconds", "new-tokens",
                                        "images", "image-size", "deadline-s", "ca", "out", "priorities"});
  if (!flags.ok()) {
    std::fprintf(stderr, "grpc_load: %s\n", flags.status().ToString().c_str());
    return 2;
  }
  const std::string mode = flags->Get("mode", "closed");
  const int64_t requests = flags->GetInt("requests", 512).value_or(512);
  const int new_tokens = static_cast<int>(flags->GetInt("new-tokens", 32).value_or(32));
  const int image_size = static_cast<int>(flags->GetInt("image-size", 224).value_or(224));
  double seconds = 10;
  absl::SimpleAtod(flags->Get("seconds", "10"), &seconds);
  // Distinct images by default (one per request, as the engine benchmark
  // does), so every call runs decoding, preprocessing and the encoder.
  const int64_t distinct = flags->GetInt("images", requests).value_or(requests);
  // A different series of images on every run, so a second run against the
  // same server is not answered from its image cache.
  const int run_seed = static_cast<int>(std::random_device()() % 1000) * 1000000;

  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  // Client-side balancing over several addresses, e.g. --target
  // ipv4:127.0.0.1:5001,127.0.0.1:5002 --lb round_robin.
  if (flags->Has("lb")) args.SetLoadBalancingPolicyName(flags->Get("lb", ""));
  // --ca FILE: TLS, trusting that CA (the server's certificate must name the target's host).
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (flags->Has("ca")) {
    auto ca = common::ReadFile(flags->Get("ca", ""));
    if (!ca.ok()) {
      std::fprintf(stderr, "grpc_load: %s\n", ca.status().ToString().c_str());
      return 2;
    }
    grpc::SslCredentialsOptions tls;
    tls.pem_root_certs = *ca;
    credentials = grpc::SslCredentials(tls);
  }
  auto channel = grpc::CreateCustomChannel(flags->Get("target", "127.0.0.1:50051"), credentials, args);
  auto stub = v1::Blip2::NewStub(channel);
  // Unreachable is reported, not fatal: the calls then fail, each counted by status.
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(30))) {
    std::fprintf(stderr, "grpc_load: cannot connect to %s; running anyway\n", flags->Get("target", "").c_str());
  }
  double deadline_s = 120;
  absl::SimpleAtod(flags->Get("deadline-s", "120"), &deadline_s);
  Workload w{stub.get(), new_tokens, image_size, distinct, deadline_s, {}};
  if (flags->Has("priorities")) {
    double total = 0;
    for (absl::string_view item : absl::StrSplit(flags->Get("priorities", ""), ',')) {
      const std::vector<std::string> parts = absl::StrSplit(item, ':');
      int priority = 0;
      double share = 0;
      if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &priority) || !absl::SimpleAtod(parts[1], &share) ||
          share <= 0) {
        std::fprintf(stderr, "grpc_load: --priorities wants PRIORITY:SHARE,... (e.g. 0:0.05,5:0.95)\n");
        return 2;
      }
      w.priorities.emplace_back(priority, share);
      total += share;
    }
    for (auto& [priority, share] : w.priorities) share /= total;
  }
  int level_index = 0;
  std::printf("%-6s %8s %8s %6s %10s %10s %8s %8s %8s %8s %8s %8s\n", "mode", "level", "calls", "errors", "req/s",
              "tokens/s", "ttft50", "ttft90", "ttft99", "itl50", "itl90", "itl99");
  nlohmann::json rows = nlohmann::json::array();
  if (mode == "closed") {
    for (double c : Levels(flags->Get("concurrency", "1,8,32,128"))) {
      rows.push_back(RunClosed(w, MakeImages(w, run_seed + 10000 * ++level_index), static_cast<int>(c), requests));
    }
  } else if (mode == "open") {
    for (double rate : Levels(flags->Get("rate", "100"))) {
      rows.push_back(RunOpen(w, MakeImages(w, run_seed + 10000 * ++level_index), rate, seconds));
    }
  } else {
    std::fprintf(stderr, "grpc_load: --mode closed or open\n");
    return 2;
  }
  nlohmann::json report = {{"benchmark", "grpc_load"},
                           {"target", flags->Get("target", "127.0.0.1:50051")},
                           {"distinct_images", distinct},
                           {"image_size", image_size},
                           {"results", rows}};
  if (flags->Has("out")) {
    // Error messages come from servers and proxies: never let a stray byte stop the report.
    std::ofstream(flags->Get("out", "")) << report.dump(1, ' ', false, nlohmann::json::error_handler_t::replace)
                                         << "\n";
    std::printf("wrote %s\n", flags->Get("out", "").c_str());
  }
  return 0;
}

}  // namespace
}  // namespace blip2::bench

int main(int argc, char** argv) { return blip2::bench::Main(argc, argv); }
