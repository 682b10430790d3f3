#include "tests/parity/parity_checks.h"

#include <cstdio>
#include <cstdlib>

#include "tests/catch.h"

namespace blip2::testing {
namespace {

void Report(const std::string& model, const std::string& key, const Difference& d, double tolerance) {
  std::printf("PARITY %-22s %-48s max_abs %.3g mean_abs %.3g (tolerance %.3g)\n", model.c_str(), key.c_str(),
              d.max_abs, d.mean_abs, tolerance);
}

}  // namespace

void CheckTensor(const FixtureModel& m, const std::string& key, const engine::HostTensor& ours) {
  INFO(m.name << " " << key);
  REQUIRE(ours.shape == m.Shape(key));
  const Difference d = Compare(ours.values, m.Values(key));
  const double tolerance = 1e-4 * (1.0 + d.max_ref);
  Report(m.name, key, d, tolerance);
  CHECK(d.max_abs <= tolerance);
}

void CheckPixels(const FixtureModel& m, const std::string& key, const std::vector<float>& ours) {
  INFO(m.name << " " << key);
  const Difference d = Compare(ours, m.Values(key));
  Report(m.name, key, d, 0.035);
  CHECK(d.max_abs <= 0.035);
  CHECK(d.mean_abs <= 1e-4);
}

std::string TestDevice() {
  const char* env = std::getenv("BLIP2_TEST_DEVICE");
  return env != nullptr && *env != '\0' ? env : "cpu";
}

}  // namespace blip2::testing
