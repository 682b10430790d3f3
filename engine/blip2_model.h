// A loaded BLIP-2 checkpoint: its specs, the image path and (for captioning
// checkpoints with an OPT language model) the decoder. Internal (ATen); the
// torch-free faces are image_encoder.h and captioner.h.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "engine/image_encoder.h"
#include "engine/image_path.h"
#include "engine/model_config.h"
#include "engine/opt_decoder.h"
#include "engine/safetensors.h"

namespace blip2::engine {

struct Blip2Model {
  ModelSpec spec;
  std::unique_ptr<Checkpoint> checkpoint;
  at::Device device = at::kCPU;
  at::ScalarType dtype = at::kFloat;
  std::optional<ImagePath> image_path;
  std::optional<OptDecoder> opt;  // when loaded with the language model

  // Statuses name the file, tensor or field at fault. UNIMPLEMENTED for a
  // language model this build cannot run yet (T5 arrives with [F]).
  static absl::StatusOr<std::unique_ptr<Blip2Model>> Load(const EngineOptions& options, bool with_language_model);

  // pixels: preprocessed images, each [C, H, W]. Returns [B, C, H, W] on the device.
  at::Tensor PixelBatch(const std::vector<std::vector<float>>& images) const;
  // The same without copying the callers' vectors first.
  at::Tensor PixelBatch(const std::vector<const std::vector<float>*>& images) const;
};

}  // namespace blip2::engine
