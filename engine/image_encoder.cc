#include "engine/image_encoder.h"

#include <c10/core/InferenceMode.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "engine/image_path.h"
#include "engine/safetensors.h"
#include "engine/torch_util.h"

namespace blip2::engine {
namespace {

HostTensor ToHost(const at::Tensor& t) {
  HostTensor out;
  if (!t.defined()) return out;
  const at::Tensor host = t.detach().to(at::kCPU, at::kFloat).contiguous();
  out.shape.assign(host.sizes().begin(), host.sizes().end());
  out.values.assign(host.data_ptr<float>(), host.data_ptr<float>() + host.numel());
  return out;
}

}  // namespace

struct ImageEncoder::Impl {
  ModelSpec spec;
  std::unique_ptr<Checkpoint> checkpoint;
  at::Device device = at::kCPU;
  std::optional<ImagePath> path;
};

ImageEncoder::ImageEncoder(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ImageEncoder::~ImageEncoder() = default;

absl::StatusOr<std::unique_ptr<ImageEncoder>> ImageEncoder::Load(const EngineOptions& options) {
  auto impl = std::make_unique<Impl>();
  ASSIGN_OR_RETURN(impl->spec, LoadModelSpec(options.model_dir));
  ASSIGN_OR_RETURN(impl->device, ParseDevice(options.device));
  ASSIGN_OR_RETURN(at::ScalarType dtype, ParseComputeDType(options.dtype));
  ASSIGN_OR_RETURN(impl->checkpoint, Checkpoint::Open(options.model_dir));
  const auto start = std::chrono::steady_clock::now();
  try {
    c10::InferenceMode guard;
    WeightLoader weights(*impl->checkpoint, impl->device);
    ASSIGN_OR_RETURN(ImagePath path, ImagePath::Load(weights, impl->spec.config, dtype));
    impl->path.emplace(std::move(path));
  } catch (const std::exception& e) {
    return StatusFromException(e, absl::StrCat("loading ", options.model_dir));
  }
  const Blip2Config& c = impl->spec.config;
  common::LogInfo("engine", absl::StrFormat(
      "loaded the image path of %s (vision %dx%d, Q-Former %dx%d, %d queries) on %s in %s in %.2f s",
      options.model_dir, c.vision.num_hidden_layers, c.vision.hidden_size, c.qformer.num_hidden_layers,
      c.qformer.hidden_size, c.num_query_tokens, options.device, options.dtype,
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()));
  return std::unique_ptr<ImageEncoder>(new ImageEncoder(std::move(impl)));
}

const ModelSpec& ImageEncoder::spec() const { return impl_->spec; }

std::vector<int64_t> ImageEncoder::pixel_shape() const {
  const VisionConfig& v = impl_->spec.config.vision;
  return {v.num_channels, v.image_size, v.image_size};
}

absl::StatusOr<ImageEncoding> ImageEncoder::Encode(const std::vector<std::vector<float>>& pixel_images,
                                                   bool include_intermediates) const {
  if (pixel_images.empty()) return absl::InvalidArgumentError("no images to encode");
  const std::vector<int64_t> shape = pixel_shape();
  const size_t per_image = static_cast<size_t>(shape[0] * shape[1] * shape[2]);
  for (size_t i = 0; i < pixel_images.size(); ++i) {
    if (pixel_images[i].size() != per_image) {
      return absl::InvalidArgumentError(absl::StrCat("image ", i, " has ", pixel_images[i].size(),
                                                     " pixel values; expected ", per_image, " (", shape[0], "x",
                                                     shape[1], "x", shape[2], ")"));
    }
  }
  try {
    c10::InferenceMode guard;
    at::Tensor pixels = at::empty({static_cast<int64_t>(pixel_images.size()), shape[0], shape[1], shape[2]}, at::kFloat);
    for (size_t i = 0; i < pixel_images.size(); ++i) {
      std::memcpy(pixels[static_cast<int64_t>(i)].data_ptr<float>(), pixel_images[i].data(), per_image * sizeof(float));
    }
    const ImagePathOutput out = impl_->path->Forward(pixels.to(impl_->device));
    ImageEncoding encoding;
    encoding.embeddings = ToHost(out.projected.defined() ? out.projected : out.qformer);
    if (include_intermediates) {
      encoding.vision_last_hidden_state = ToHost(out.vision.last_hidden_state);
      encoding.vision_pooler_output = ToHost(out.vision.pooler_output);
      encoding.qformer_output = ToHost(out.qformer);
      encoding.projected = ToHost(out.projected);
      encoding.image_embeds = ToHost(out.image_embeds);
    }
    return encoding;
  } catch (const std::exception& e) {
    return StatusFromException(e, "encoding images");
  }
}

}  // namespace blip2::engine
