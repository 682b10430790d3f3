// An image file of a fixtures folder as the server sees it: decoded by our
// image decoder, then preprocessed for the checkpoint.
#pragma once

#include <string>
#include <vector>

#include "engine/model/model_config.h"

namespace blip2::testing {

// [C, H, W] float32 values; a test failure naming the file when it does not decode.
std::vector<float> DecodeAndPreprocess(const std::string& image_path, const engine::ImageProcessorConfig& config);

}  // namespace blip2::testing
