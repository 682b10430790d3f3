// Image-text retrieval requests and results (retrieval checkpoints such as
// blip2-itm-vit-g): match one image against texts (ITM probability and ITC
// similarity per text) and embed images and texts. The engine runs them
// through the same vision batcher and image cache as generation, and batches
// the texts of all requests ready together. Torch-free header.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace blip2::engine {

struct RetrievalRequest {
  std::vector<float> pixels;          // one preprocessed image [C, H, W]; empty: texts only
  std::optional<uint64_t> image_key;  // instead of pixels: an image registered with RegisterImage
  std::vector<std::string> texts;
  bool match = false;     // score every text against the image (needs the image)
  bool features = false;  // also return the raw Q-Former features
};

// A row-major matrix of floats.
struct FloatMatrix {
  int64_t rows = 0, cols = 0;
  std::vector<float> values;
};

struct TextRetrieval {
  std::vector<float> embedding;  // [E]: the normalised [CLS] projection (ITC)
  int64_t tokens = 0;            // [CLS] ... [SEP], after truncation
  bool truncated = false;        // cut to max_text_tokens
  // With match: ITM's softmax probability of "match", and the ITC cosine
  // similarity (the best of the image's query embeddings).
  double match_probability = 0;
  double similarity = 0;
  FloatMatrix features;  // with features: the Q-Former's text output [tokens, H]
};

struct RetrievalResult {
  FloatMatrix image_embeddings;  // [Q, E] normalised, when the request had an image
  FloatMatrix image_features;    // [Q, H] Q-Former output, with features
  std::vector<TextRetrieval> texts;  // in the request's order
};

}  // namespace blip2::engine
