// Our resize against LibTorch's own uint8 antialiased bicubic kernel, the one
// torchvision (and so transformers' default image processor) calls, on random
// images of many shapes: shrinking, enlarging, and one axis at a time.
#include <ATen/ATen.h>
#include <ATen/Version.h>

#include <random>

#include "engine/model/image_preprocessor.h"
#include "tests/catch.h"

namespace blip2::engine {
namespace {

TEST_CASE("resize: bit-exact with LibTorch's uint8 antialiased bicubic") {
  if (at::get_cpu_capability() == "DEFAULT") {
    WARN("this CPU has no AVX2: LibTorch uses a different uint8 kernel here; skipped");
    return;
  }
  std::mt19937 rng(1234);
  const std::vector<std::pair<int, int>> sizes = {{640, 480}, {37, 23}, {224, 500}, {1000, 224}, {225, 223},
                                                  {1, 1},     {3, 700}, {500, 375}, {224, 224}, {97, 1301}};
  for (auto [w, h] : sizes) {
    RgbImage img{w, h, std::vector<uint8_t>(size_t(w) * h * 3)};
    for (auto& p : img.pixels) p = static_cast<uint8_t>(rng() & 0xFF);
    const RgbImage ours = ResizeBicubicAntialias(img, 224, 224);
    at::Tensor hwc = at::from_blob(img.pixels.data(), {h, w, 3}, at::kByte);
    at::Tensor nchw = hwc.permute({2, 0, 1}).unsqueeze(0).contiguous();
    at::Tensor theirs = at::_upsample_bicubic2d_aa(nchw, {224, 224}, /*align_corners=*/false);
    theirs = theirs.squeeze(0).permute({1, 2, 0}).contiguous();
    const std::vector<uint8_t> expected(theirs.data_ptr<uint8_t>(), theirs.data_ptr<uint8_t>() + theirs.numel());
    INFO(w << "x" << h);
    CHECK(ours.pixels == expected);
  }
}

}  // namespace
}  // namespace blip2::engine
