// The logits processors on small hand-made score vectors (the parity tests
// cover them inside real generate runs; sampling warpers only here).
#include <ATen/ATen.h>

#include <cmath>
#include <limits>

#include "engine/generation/logits_processors.h"
#include "tests/catch.h"

namespace blip2::engine {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<float> Values(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

GenerationParams Sampling() {
  GenerationParams p;
  p.do_sample = true;
  p.top_k = 0;
  return p;
}

TEST_CASE("processors: repetition penalty divides positive and multiplies negative scores of seen ids") {
  at::Tensor s = at::tensor({-1.0f, 1.0f, 4.0f, 3.0f});
  GenerationParams p;
  p.repetition_penalty = 2.0;
  ProcessScores(s, {0, 2, 2}, 0, p, 1);
  CHECK(Values(s) == std::vector<float>{-2.0f, 1.0f, 2.0f, 3.0f});
}

TEST_CASE("processors: no-repeat n-gram bans the token that would repeat an n-gram") {
  CHECK(BannedNgramTokens({1, 2, 3, 1, 2}, 3) == std::vector<int64_t>{3});
  CHECK(BannedNgramTokens({1, 2, 3, 1, 2}, 2) == std::vector<int64_t>{3});
  CHECK(BannedNgramTokens({5}, 3).empty());
  at::Tensor s = at::zeros({5});
  GenerationParams p;
  p.no_repeat_ngram_size = 2;
  ProcessScores(s, {4, 1, 4}, 0, p, 1);
  CHECK(Values(s)[1] == -kInf);
}

TEST_CASE("processors: min_new_tokens masks every stop id until enough tokens exist") {
  GenerationParams p;
  p.min_new_tokens = 2;
  p.eos_token_ids = {1, 3};
  at::Tensor s = at::zeros({4});
  ProcessScores(s, {}, 1, p, 1);
  CHECK(Values(s) == std::vector<float>{0, -kInf, 0, -kInf});
  at::Tensor later = at::zeros({4});
  ProcessScores(later, {}, 2, p, 1);
  CHECK(Values(later) == std::vector<float>{0, 0, 0, 0});
}

TEST_CASE("processors: temperature, top-k and top-p as transformers' warpers") {
  GenerationParams t = Sampling();
  t.temperature = 2.0;
  at::Tensor s = at::tensor({2.0f, 4.0f});
  ProcessScores(s, {}, 0, t, 1);
  CHECK(Values(s) == std::vector<float>{1.0f, 2.0f});

  GenerationParams k = Sampling();
  k.top_k = 2;
  at::Tensor sk = at::tensor({1.0f, 2.0f, 3.0f, 4.0f});
  ProcessScores(sk, {}, 0, k, 1);
  CHECK(Values(sk) == std::vector<float>{-kInf, -kInf, 3.0f, 4.0f});

  GenerationParams p = Sampling();
  p.top_p = 0.5;
  at::Tensor sp = at::log(at::tensor({0.1f, 0.2f, 0.3f, 0.4f}));
  ProcessScores(sp, {}, 0, p, 1);
  const auto v = Values(sp);
  CHECK(v[0] == -kInf);
  CHECK(v[1] == -kInf);
  CHECK(std::isfinite(v[2]));
  CHECK(std::isfinite(v[3]));
  // min_tokens_to_keep survives even a tiny top_p.
  p.top_p = 1e-6;
  at::Tensor keep = at::log(at::tensor({0.1f, 0.2f, 0.3f, 0.4f}));
  ProcessScores(keep, {}, 0, p, 2);
  CHECK(std::isfinite(Values(keep)[2]));
}

}  // namespace
}  // namespace blip2::engine
