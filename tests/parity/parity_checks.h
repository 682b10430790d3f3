// Comparison helpers shared by the parity tests: tolerances from the fixtures
// README, one printed line per compared tensor (the numbers in issue notes).
#pragma once

#include <string>
#include <vector>

#include "engine/model/image_encoder.h"
#include "tests/parity/fixture_set.h"

namespace blip2::testing {

// Hidden states and scores: max |ours - ref| <= 1e-4 * (1 + max |ref|).
void CheckTensor(const FixtureModel& m, const std::string& key, const engine::HostTensor& ours);

// Pixels: max abs <= 0.035 and mean abs <= 1e-4.
void CheckPixels(const FixtureModel& m, const std::string& key, const std::vector<float>& ours);

// The device the parity tests run on: $BLIP2_TEST_DEVICE, default "cpu".
std::string TestDevice();

}  // namespace blip2::testing
