// One loaded checkpoint and what belongs to it alone: its image cache (two
// checkpoints embed the same pixels differently), its vision batcher, the
// images registered on it and, for a retrieval checkpoint, its text tokenizer.
// An engine holds one room, or two when it serves a generation model and a
// retrieval model together; every room runs on the engine's one thread.
// Internal (ATen).
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/blip2_model.h"
#include "engine/runtime/engine.h"
#include "engine/runtime/image_cache.h"
#include "engine/runtime/vision_batcher.h"
#include "engine/runtime/registrations.h"
#include "engine/tokenizer/wordpiece_tokenizer.h"

namespace blip2::engine {

struct ModelRoom {
  std::unique_ptr<Blip2Model> model;
  std::unique_ptr<ImageCache> images;
  std::unique_ptr<VisionBatcher> vision;
  std::unique_ptr<WordPieceTokenizer> text_tokenizer;  // retrieval checkpoints
  int64_t max_text_tokens = 0;                         // retrieval: [CLS] + pieces + [SEP]
  // Under the engine's mutex: the leases on registered images.
  Registrations registered;
  // Engine thread only: keys holding one registration pin in `images`.
  std::set<uint64_t> registration_pins;

  bool serves_generation() const { return !model->spec.config.is_retrieval(); }
  bool serves_retrieval() const { return model->retrieval.has_value(); }
  // [C, H, W] of the preprocessed pixels this checkpoint takes.
  std::vector<int64_t> pixel_shape() const;
};

// Loads a checkpoint (the language model too, unless it is a retrieval one)
// with its own image cache and vision batcher sized by `config`.
absl::StatusOr<std::unique_ptr<ModelRoom>> LoadModelRoom(const EngineOptions& options, const EngineConfig& config);

}  // namespace blip2::engine
