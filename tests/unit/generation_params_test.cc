// Resolving generation options: checkpoint defaults, overrides, and every bad
// value refused with the field named.
#include <cmath>
#include <limits>

#include "engine/generation/generation_params.h"
#include "tests/catch.h"

namespace blip2::engine {
namespace {

absl::Status Resolve(const GenerationOverrides& o, const GenerationLimits& limits = {}) {
  return ResolveGenerationParams(GenerationConfig{}, o, limits).status();
}

bool Names(const absl::Status& s, const std::string& field) {
  return s.code() == absl::StatusCode::kInvalidArgument && s.message().rfind(field + ":", 0) == 0;
}

TEST_CASE("generation params: defaults come from generation_config.json") {
  GenerationConfig d;
  d.max_new_tokens = 30;
  d.eos_token_id = {202};
  d.num_beams = 3;
  auto p = ResolveGenerationParams(d, {}, {});
  REQUIRE(p.ok());
  CHECK(p->max_new_tokens == 30);
  CHECK(p->num_beams == 3);
  CHECK(p->eos_token_ids == std::vector<int64_t>{202});
  CHECK_FALSE(p->do_sample);
  GenerationConfig no_max;
  CHECK(ResolveGenerationParams(no_max, {}, {})->max_new_tokens == 20);  // max_length counts new tokens
}

TEST_CASE("generation params: sampling knobs turn sampling on, temperature 0 means greedy") {
  GenerationOverrides o;
  o.top_p = 0.9;
  CHECK(ResolveGenerationParams({}, o, {})->do_sample);
  o.temperature = 0.0;
  CHECK_FALSE(ResolveGenerationParams({}, o, {})->do_sample);
  GenerationOverrides seeded;
  seeded.temperature = 0.7;
  seeded.seed = 42;
  CHECK(ResolveGenerationParams({}, seeded, {})->seed == 42);
}

TEST_CASE("generation params: bad values are refused and named") {
  const double nan = std::nan(""), inf = std::numeric_limits<double>::infinity();
  GenerationOverrides o;
  o.num_beams = 0;
  CHECK(Names(Resolve(o), "num_beams"));
  o.num_beams = 9;
  CHECK(Names(Resolve(o), "num_beams"));
  o = {};
  for (double t : {-1.0, nan, inf}) {
    o.temperature = t;
    CHECK(Names(Resolve(o), "temperature"));
  }
  o = {};
  for (double p : {0.0, -0.1, 1.5, nan}) {
    o.top_p = p;
    CHECK(Names(Resolve(o), "top_p"));
  }
  o = {};
  o.top_k = -1;
  CHECK(Names(Resolve(o), "top_k"));
  o = {};
  o.max_new_tokens = 0;
  CHECK(Names(Resolve(o), "max_new_tokens"));
  o.max_new_tokens = 100;
  CHECK(Names(Resolve(o, GenerationLimits{.max_new_tokens = 64}), "max_new_tokens"));
  o = {};
  o.num_beams = 2;
  o.num_return_sequences = 3;
  CHECK(Names(Resolve(o), "num_return_sequences"));
  o = {};
  o.num_return_sequences = 2;  // greedy returns one sequence
  CHECK(Names(Resolve(o), "num_return_sequences"));
  o = {};
  o.repetition_penalty = 0;
  CHECK(Names(Resolve(o), "repetition_penalty"));
  o = {};
  o.stop_strings = {""};
  CHECK(Names(Resolve(o), "stop"));
  o = {};
  o.stop_strings = {"x"};
  o.num_beams = 2;
  CHECK(Names(Resolve(o), "stop"));
  CHECK(Names(ParseEarlyStopping("maybe").status(), "early_stopping"));
}

}  // namespace
}  // namespace blip2::engine
