// The engine's torch-free face for the image path. Callers (the CLI, the server,
// tests that also use protobuf) include only this header; LibTorch stays inside
// the engine library, so no translation unit ever sees both torch's bundled
// protobuf headers and the system ones (docs/torch-and-protobuf.md).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/model_config.h"

namespace blip2::engine {

struct EngineOptions {
  std::string model_dir;
  std::string device = "cpu";     // "cpu", "cuda", "cuda:N"
  std::string dtype = "float32";  // vision and projections; the Q-Former is always float32
  // "" or "none": weights in `dtype`. "int8": the language model's linear
  // layers as per-output-channel int8 (weights.h), computed in `dtype`.
  std::string quantization = "none";
};

// A dense float32 tensor copied to host memory, row-major.
struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> values;
};

struct ImageEncoding {
  // Always set: [B, Q, D_lm] projected queries (captioning checkpoints), or the
  // [B, Q, Hq] Q-Former output (retrieval checkpoints, which have no projection).
  HostTensor embeddings;
  // Set when intermediates are asked for.
  HostTensor vision_last_hidden_state;  // [B, T, Dv]
  HostTensor vision_pooler_output;      // [B, Dv]
  HostTensor qformer_output;            // [B, Q, Hq]
  HostTensor projected;                 // [B, Q, D_lm]; empty for retrieval checkpoints
  HostTensor image_embeds;              // [B, Q, E] normalised ITC embeddings; retrieval only
};

// Owns the weights of the vision encoder, Q-Former and projection. Encode may be
// called from one thread at a time (the engine thread).
class ImageEncoder {
 public:
  // Reads the folder's JSON files and the image-path tensors (not the language
  // model's). Errors name the file, tensor or field at fault.
  static absl::StatusOr<std::unique_ptr<ImageEncoder>> Load(const EngineOptions& options);
  ~ImageEncoder();

  const ModelSpec& spec() const;
  // Channels, height and width every pixel image must have.
  std::vector<int64_t> pixel_shape() const;

  // pixel_images: preprocessed images, each [3, H, W] float32 CHW. One batch.
  absl::StatusOr<ImageEncoding> Encode(const std::vector<std::vector<float>>& pixel_images,
                                       bool include_intermediates = false) const;

 private:
  struct Impl;
  explicit ImageEncoder(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace blip2::engine
