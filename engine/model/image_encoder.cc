#include "engine/model/image_encoder.h"

#include <c10/core/InferenceMode.h>


#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/model/blip2_model.h"
#include "engine/model/torch_util.h"

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
  std::unique_ptr<Blip2Model> model;
};

ImageEncoder::ImageEncoder(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ImageEncoder::~ImageEncoder() = default;

absl::StatusOr<std::unique_ptr<ImageEncoder>> ImageEncoder::Load(const EngineOptions& options) {
  auto impl = std::make_unique<Impl>();
  ASSIGN_OR_RETURN(impl->model, Blip2Model::Load(options, /*with_language_model=*/false));
  return std::unique_ptr<ImageEncoder>(new ImageEncoder(std::move(impl)));
}

const ModelSpec& ImageEncoder::spec() const { return impl_->model->spec; }

std::vector<int64_t> ImageEncoder::pixel_shape() const {
  const VisionConfig& v = impl_->model->spec.config.vision;
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
    const ImagePathOutput out = impl_->model->image_path->Forward(impl_->model->PixelBatch(pixel_images));
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
