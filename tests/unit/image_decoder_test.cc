// Image bytes -> RGB: every format we accept, PIL's colour rules, and each kind
// of bad input refused with a message naming the problem.
#include "server/imaging/image_decoder.h"

#include <zlib.h>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <random>

#include "server/imaging/image_header.h"
#include "tests/catch.h"
#include "tests/test_support.h"

namespace blip2::server {
namespace {

std::string Be32(uint32_t v) {
  return {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
}

std::string Chunk(const std::string& type, const std::string& data) {
  std::string body = type + data;
  const uint32_t crc = crc32(0, reinterpret_cast<const Bytef*>(body.data()), body.size());
  return Be32(data.size()) + body + Be32(crc);
}

// A hand-made PNG, for layouts OpenCV's encoder cannot produce (grey+alpha,
// palette) and for headers that lie about the size.
std::string MakePng(uint32_t w, uint32_t h, int color_type, const std::vector<uint8_t>& rows,
                    const std::string& palette = "") {
  std::string ihdr = Be32(w) + Be32(h) + std::string{char(8), char(color_type), 0, 0, 0};
  uLongf len = compressBound(rows.size());
  std::string z(len, '\0');
  compress(reinterpret_cast<Bytef*>(z.data()), &len, rows.data(), rows.size());
  z.resize(len);
  std::string png = "\x89PNG\r\n\x1a\n" + Chunk("IHDR", ihdr);
  if (!palette.empty()) png += Chunk("PLTE", palette);
  return png + Chunk("IDAT", z) + Chunk("IEND", "");
}

std::string Encode(const cv::Mat& m, const std::string& ext, std::vector<int> params = {}) {
  std::vector<uchar> buf;
  REQUIRE(cv::imencode(ext, m, buf, params));
  return std::string(buf.begin(), buf.end());
}

cv::Mat NoiseBgr(int w, int h) {
  cv::Mat m(h, w, CV_8UC3);
  cv::randu(m, 0, 256);
  return m;
}

void ExpectError(const std::string& bytes, const std::string& fragment, DecodeLimits limits = {}) {
  auto r = DecodeImage(bytes, limits);
  INFO(r.status().ToString());
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(r.status().message().find(fragment) != std::string::npos);
}

TEST_CASE("decode: lossless formats round-trip to RGB") {
  const cv::Mat bgr = NoiseBgr(13, 7);
  for (const auto& [ext, params] : std::vector<std::pair<std::string, std::vector<int>>>{
           {".png", {}}, {".bmp", {}}, {".tiff", {}}, {".webp", {cv::IMWRITE_WEBP_QUALITY, 101}}}) {
    auto img = DecodeImage(Encode(bgr, ext, params), {});
    INFO(ext << " " << img.status().ToString());
    REQUIRE(img.ok());
    REQUIRE(img->width == 13);
    REQUIRE(img->height == 7);
    const cv::Vec3b p = bgr.at<cv::Vec3b>(3, 5);
    const size_t at = (3 * 13 + 5) * 3;
    CHECK(img->pixels[at] == p[2]);  // R
    CHECK(img->pixels[at + 1] == p[1]);
    CHECK(img->pixels[at + 2] == p[0]);
  }
}

TEST_CASE("decode: JPEG decodes and its header size is read") {
  const std::string jpeg = Encode(NoiseBgr(40, 30), ".jpg");
  auto header = ReadImageHeader(jpeg);
  REQUIRE(header.ok());
  CHECK(header->width == 40);
  CHECK(header->height == 30);
  auto img = DecodeImage(jpeg, {});
  REQUIRE(img.ok());
  CHECK(img->pixels.size() == 40 * 30 * 3);
}

TEST_CASE("decode: a 1x1 image works") {
  cv::Mat one(1, 1, CV_8UC3, cv::Scalar(10, 20, 30));
  auto img = DecodeImage(Encode(one, ".png"), {});
  REQUIRE(img.ok());
  CHECK(img->pixels == std::vector<uint8_t>{30, 20, 10});
}

TEST_CASE("decode: grey, grey+alpha, RGBA and palette images become RGB, alpha dropped") {
  auto grey = DecodeImage(MakePng(2, 1, 0, {0, 7, 200}), {});
  REQUIRE(grey.ok());
  CHECK(grey->pixels == std::vector<uint8_t>{7, 7, 7, 200, 200, 200});
  auto grey_alpha = DecodeImage(MakePng(2, 1, 4, {0, 7, 0, 200, 128}), {});
  REQUIRE(grey_alpha.ok());
  CHECK(grey_alpha->pixels == std::vector<uint8_t>{7, 7, 7, 200, 200, 200});
  auto rgba = DecodeImage(MakePng(1, 1, 6, {0, 1, 2, 3, 0}), {});  // fully transparent pixel
  REQUIRE(rgba.ok());
  CHECK(rgba->pixels == std::vector<uint8_t>{1, 2, 3});
  const std::string palette = {char(255), 0, 0, 0, char(255), 0};
  auto indexed = DecodeImage(MakePng(2, 1, 3, {0, 1, 0}, palette), {});
  REQUIRE(indexed.ok());
  CHECK(indexed->pixels == std::vector<uint8_t>{0, 255, 0, 255, 0, 0});
}

TEST_CASE("decode: empty input and random bytes") {
  ExpectError("", "empty");
  std::mt19937 rng(7);
  std::string noise(1000, '\0');
  for (char& c : noise) c = static_cast<char>(rng());
  ExpectError(noise, "unrecognised image format");
}

TEST_CASE("decode: a format OpenCV cannot read") {
  ExpectError(std::string("GIF89a\x01\x00\x01\x00\x00\x00\x00;", 13), "GIF images are not supported");
}

TEST_CASE("decode: truncated JPEG") {
  const std::string jpeg = Encode(NoiseBgr(64, 64), ".jpg");
  ExpectError(jpeg.substr(0, jpeg.size() / 2), "JPEG data is truncated");
  ExpectError(jpeg.substr(0, 10), "JPEG");
}

TEST_CASE("decode: truncated PNG") {
  const std::string png = Encode(NoiseBgr(64, 64), ".png");
  ExpectError(png.substr(0, png.size() / 2), "PNG image could not be decoded");
  ExpectError(png.substr(0, 20), "truncated or corrupt PNG header");
}

TEST_CASE("decode: a 0x0 image") {
  ExpectError(MakePng(0, 0, 2, {}), "0x0");
}

TEST_CASE("decode: a header claiming 100000x100000 is refused before decoding") {
  // Only the header is real: no decoder could get as far as allocating.
  const std::string header_only = MakePng(100000, 100000, 2, {0, 0, 0, 0});
  ExpectError(header_only, "100000x100000 = 10000000000 pixels, over the limit of 50000000");
}

TEST_CASE("decode: a header claiming 4294967295x4294967295 is refused without overflowing") {
  // Found by tests/fuzz/image_fuzz: width * height overflowed int64 (UBSan).
  const std::string header_only = MakePng(0xffffffffu, 0xffffffffu, 2, {0, 0, 0, 0});
  ExpectError(header_only, "4294967295x4294967295 = 18446744065119617025 pixels, over the limit");
}

TEST_CASE("decode: the pixel limit is configurable") {
  const std::string png = Encode(NoiseBgr(11, 10), ".png");
  ExpectError(png, "over the limit of 100", DecodeLimits{100});
  CHECK(DecodeImage(png, DecodeLimits{110}).ok());
}

TEST_CASE("decode: the fixture images decode with their stored sizes") {
  for (const char* name : {"chelsea.jpg", "coffee.jpg", "astronaut.png", "camera_gray.png", "half_transparent.png",
                           "tiny_upscale.png"}) {
    auto img = DecodeImage(testing::ReadFileOrDie(testing::FixturesDir() + "/images/" + name), {});
    INFO(name);
    REQUIRE(img.ok());
    CHECK(img->pixels.size() == size_t(img->width * img->height * 3));
  }
}

}  // namespace
}  // namespace blip2::server
