// blip2 encode: decode -> preprocess -> image path, one batch, statistics out.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <google/protobuf/text_format.h>
#include <spdlog/spdlog.h>

#include "common/file_util.h"
#include "engine/model/image_encoder.h"
#include "engine/model/image_preprocessor.h"
#include "server_config.pb.h"
#include "common/cli_flags.h"
#include "server/cli/commands.h"
#include "server/imaging/image_decoder.h"

namespace blip2::server {
namespace {

using common::CliFlags;

int Fail(const absl::Status& status) { return CommandFailed("encode", status); }

// Defaults, then --config FILE (text format), then individual flags.
absl::StatusOr<config::ServerConfig> ConfigFromFlags(const CliFlags& flags) {
  config::ServerConfig cfg;
  cfg.set_device("cpu");
  cfg.set_dtype("float32");
  cfg.set_max_image_pixels(DecodeLimits().max_pixels);
  if (flags.Has("config")) {
    const std::string path = flags.Get("config", "");
    auto text = common::ReadFile(path);
    if (!text.ok()) return text.status();
    if (!google::protobuf::TextFormat::MergeFromString(*text, &cfg)) {
      return absl::InvalidArgumentError(path + ": not a valid blip2.config.ServerConfig in text format");
    }
  }
  if (flags.Has("model")) cfg.set_model_dir(flags.Get("model", ""));
  if (flags.Has("device")) cfg.set_device(flags.Get("device", ""));
  if (flags.Has("dtype")) cfg.set_dtype(flags.Get("dtype", ""));
  auto max_pixels = flags.GetInt("max-image-pixels", cfg.max_image_pixels());
  if (!max_pixels.ok()) return max_pixels.status();
  cfg.set_max_image_pixels(*max_pixels);
  if (cfg.model_dir().empty()) return absl::InvalidArgumentError("--model DIR (or model_dir in --config) is required");
  if (cfg.max_image_pixels() <= 0) return absl::InvalidArgumentError("--max-image-pixels must be positive");
  return cfg;
}

}  // namespace

int RunEncode(const std::vector<std::string>& args) {
  auto flags = CliFlags::Parse(args, {"config", "model", "image", "device", "dtype", "max-image-pixels"});
  if (!flags.ok()) return Fail(flags.status());
  auto cfg = ConfigFromFlags(*flags);
  if (!cfg.ok()) return Fail(cfg.status());
  const std::vector<std::string> images = flags->GetAll("image");
  if (images.empty()) return Fail(absl::InvalidArgumentError("at least one --image FILE is required"));
  spdlog::info("engine config: {}", cfg->ShortDebugString());

  auto encoder = engine::ImageEncoder::Load({cfg->model_dir(), cfg->device(), cfg->dtype()});
  if (!encoder.ok()) return Fail(encoder.status());
  const DecodeLimits limits{cfg->max_image_pixels()};
  std::vector<std::vector<float>> pixels;
  for (const std::string& path : images) {
    auto bytes = common::ReadFile(path);
    if (!bytes.ok()) return Fail(bytes.status());
    auto values = DecodeToPixels(*bytes, limits, (*encoder)->spec().image_processor, path);
    if (!values.ok()) return Fail(values.status());
    pixels.push_back(std::move(*values));
  }
  auto encoding = (*encoder)->Encode(pixels);
  if (!encoding.ok()) return Fail(encoding.status());

  const engine::HostTensor& e = encoding->embeddings;
  const bool retrieval = (*encoder)->spec().config.is_retrieval();
  const size_t per_image = e.values.size() / images.size();
  std::printf("%s: [%lld, %lld] per image (%s)\n", retrieval ? "qformer_output" : "projected_query_embeddings",
              static_cast<long long>(e.shape[1]), static_cast<long long>(e.shape[2]),
              retrieval ? "retrieval checkpoint: Q-Former output" : "language projection");
  for (size_t i = 0; i < images.size(); ++i) {
    double sum = 0, sq = 0;
    for (size_t k = 0; k < per_image; ++k) {
      const double v = e.values[i * per_image + k];
      sum += v;
      sq += v * v;
    }
    std::printf("%s\tshape [%lld, %lld]\tmean %.6f\tl2 %.6f\n", images[i].c_str(), static_cast<long long>(e.shape[1]),
                static_cast<long long>(e.shape[2]), sum / double(per_image), std::sqrt(sq));
  }
  return 0;
}

}  // namespace blip2::server
