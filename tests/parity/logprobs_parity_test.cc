// Log-probabilities through the serving engine against transformers: for
// every fixture case with raw greedy step logits (<case>.greedy_min12.step_logits),
// each returned token's logprob and its step's top 5 equal the log-softmax of
// transformers' logits at that step, streamed and in the result, with all of
// a folder's cases in flight at once. Data-driven over BLIP2_FIXTURES_DIR.
#include <algorithm>
#include <cmath>
#include <mutex>

#include "engine/runtime/engine.h"
#include "engine/runtime/waiting_sink.h"
#include "tests/catch.h"
#include "tests/parity/fixture_set.h"
#include "tests/test_support.h"

namespace blip2::testing {
namespace {

constexpr int64_t kTop = 5;

// Also keeps what OnToken streamed.
class LogprobSink : public engine::WaitingSink {
 public:
  void OnToken(int64_t, const engine::TokenLogprob* logprob) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (logprob != nullptr) streamed_.push_back(*logprob);
  }
  std::vector<engine::TokenLogprob> streamed() {
    std::lock_guard<std::mutex> lock(mu_);
    return streamed_;
  }

 private:
  std::mutex mu_;
  std::vector<engine::TokenLogprob> streamed_;
};

// log_softmax of one row of reference logits.
std::vector<double> LogSoftmax(const float* row, int64_t n) {
  double max = row[0];
  for (int64_t i = 1; i < n; ++i) max = std::max<double>(max, row[i]);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(row[i] - max);
  std::vector<double> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = row[i] - max - std::log(sum);
  return out;
}

struct Case {
  std::string label;
  std::vector<float> logits;  // [steps, V]
  int64_t steps = 0, vocab = 0;
  engine::EngineRequest request;
  std::shared_ptr<LogprobSink> sink = std::make_shared<LogprobSink>();
};

TEST_CASE("parity: logprobs and top logprobs of every greedy step equal the log-softmax of transformers' logits") {
  const std::vector<FixtureModel> models = DiscoverModels(FixturesDir());
  int checked = 0;
  for (const FixtureModel& m : models) {
    std::vector<Case> cases;
    const nlohmann::json all_cases = m.reference.value("cases", nlohmann::json::object());
    for (const auto& [case_name, c] : all_cases.items()) {
      const std::string key = case_name + ".greedy_min12.step_logits";
      if (!m.HasTensor(key)) continue;
      Case k;
      k.label = m.name + " " + case_name;
      k.logits = m.Values(key);
      k.steps = m.Shape(key)[0];
      k.vocab = m.Shape(key)[1];
      k.request.pixels = ReferencePixels(models, c["image"].get<std::string>(), m.dir);
      k.request.prompt = c["prompt"].get<std::string>();
      k.request.overrides.max_new_tokens = k.steps;
      k.request.overrides.min_new_tokens = k.steps;
      k.request.overrides.do_sample = false;
      k.request.overrides.num_beams = 1;
      k.request.overrides.logprobs = kTop;
      cases.push_back(std::move(k));
    }
    if (cases.empty()) continue;
    auto engine = engine::Engine::Start({m.dir}, {});
    REQUIRE(engine.ok());
    for (Case& k : cases) REQUIRE((*engine)->Submit(k.request, k.sink).ok());  // all in flight at once
    double worst = 0;
    for (Case& k : cases) {
      INFO(k.label);
      const auto result = k.sink->Wait();
      REQUIRE(result.ok());
      const engine::GeneratedSequence& seq = result->sequences.at(0);
      REQUIRE(static_cast<int64_t>(seq.token_ids.size()) == k.steps);
      REQUIRE(seq.logprobs.size() == seq.token_ids.size());
      const std::vector<engine::TokenLogprob> streamed = k.sink->streamed();
      REQUIRE(streamed.size() == seq.logprobs.size());
      for (int64_t s = 0; s < k.steps; ++s) {
        INFO("step " << s);
        const float* row = k.logits.data() + s * k.vocab;
        const std::vector<double> ref = LogSoftmax(row, k.vocab);
        const double max_ref = *std::max_element(row, row + k.vocab, [](float a, float b) { return std::fabs(a) < std::fabs(b); });
        // Logits match within 1e-4 (1 + max |logit|) (fixtures README); a
        // log-softmax moves by at most twice that.
        const double tolerance = 2e-4 * (1 + std::fabs(max_ref));
        const engine::TokenLogprob& lp = seq.logprobs[static_cast<size_t>(s)];
        CHECK(lp.token == seq.token_ids[static_cast<size_t>(s)]);
        CHECK(std::fabs(lp.logprob - ref[static_cast<size_t>(lp.token)]) <= tolerance);
        worst = std::max(worst, std::fabs(lp.logprob - ref[static_cast<size_t>(lp.token)]));
        // The top k: each entry's value is the reference's for its id, and the
        // values are the reference's k largest (ids of near-ties may swap).
        REQUIRE(static_cast<int64_t>(lp.top.size()) == kTop);
        std::vector<double> ref_sorted = ref;
        std::sort(ref_sorted.rbegin(), ref_sorted.rend());
        for (size_t j = 0; j < lp.top.size(); ++j) {
          const auto [id, value] = lp.top[j];
          CHECK(std::fabs(value - ref[static_cast<size_t>(id)]) <= tolerance);
          CHECK(std::fabs(value - ref_sorted[j]) <= tolerance);
          if (j > 0) CHECK(value <= lp.top[j - 1].second);
        }
        const engine::TokenLogprob& st = streamed[static_cast<size_t>(s)];
        CHECK(st.token == lp.token);
        CHECK(st.logprob == lp.logprob);
        CHECK(st.top == lp.top);
      }
      ++checked;
    }
    std::printf("LOGPROB PARITY %-22s %zu cases, max |logprob - transformers| %.3g\n", m.name.c_str(), cases.size(),
                worst);
  }
  CHECK(checked > 0);
}

TEST_CASE("engine: logprobs are refused outside [0, 20] and with beam search, naming the option") {
  const std::string dir = FixturesDir() + "/blip2-tiny-opt";
  auto engine = engine::Engine::Start({dir}, {});
  REQUIRE(engine.ok());
  const std::vector<FixtureModel> models = DiscoverModels(FixturesDir());
  engine::EngineRequest request;
  request.pixels = ReferencePixels(models, "chelsea", dir);
  for (const int64_t bad : {-1, 21}) {
    request.overrides.logprobs = bad;
    const auto id = (*engine)->Submit(request, std::make_shared<engine::WaitingSink>());
    CHECK(absl::IsInvalidArgument(id.status()));
    CHECK(id.status().message().find("logprobs") != std::string::npos);
  }
  request.overrides.logprobs = 2;
  request.overrides.num_beams = 3;
  const auto beams = (*engine)->Submit(request, std::make_shared<engine::WaitingSink>());
  CHECK(absl::IsInvalidArgument(beams.status()));
  CHECK(beams.status().message().find("beam") != std::string::npos);
  // Sampled tokens get theirs too; n samples each their own.
  request.overrides.num_beams = 1;
  request.overrides.do_sample = true;
  request.overrides.seed = 7;
  request.overrides.num_return_sequences = 3;
  request.overrides.max_new_tokens = 6;
  auto sink = std::make_shared<engine::WaitingSink>();
  REQUIRE((*engine)->Submit(request, sink).ok());
  const auto result = sink->Wait();
  REQUIRE(result.ok());
  REQUIRE(result->sequences.size() == 3);
  for (const engine::GeneratedSequence& s : result->sequences) {
    REQUIRE(s.logprobs.size() == s.token_ids.size());
    for (size_t i = 0; i < s.logprobs.size(); ++i) {
      CHECK(s.logprobs[i].token == s.token_ids[i]);
      CHECK(s.logprobs[i].logprob <= 0);
      CHECK(s.logprobs[i].top.size() == 2);
      CHECK(s.logprobs[i].logprob <= s.logprobs[i].top[0].second + 1e-6f);
    }
  }
}

}  // namespace
}  // namespace blip2::testing
