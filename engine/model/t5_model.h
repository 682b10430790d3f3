// The Flan-T5 language model of BLIP-2 (transformers' T5ForConditionalGeneration):
// an encoder over [image queries; prompt tokens] and a decoder with
// cross-attention. RMS LayerNorm with the variance in float32, relative
// position buckets (bidirectional in the encoder, causal in the decoder,
// computed once by the first layer and shared), no attention scaling, gated
// feed-forward, and the output head of the checkpoint (scaled by
// d_model^-0.5 first when the config says so). Internal (ATen).
//
// The engine encodes each request once (batched across requests), turns the
// encoder states into cross-attention keys and values once, then runs the
// decoder like OPT's: packed steps over many sequences, self-attention keys
// and values in the paged KV cache.
//
// float16, as transformers loads T5: the feed-forward output projection `wo`
// stays float32 (T5's _keep_in_fp32_modules), and so the residual stream is
// float32. bfloat16 keeps the residual stream in float32 too (transformers
// keeps it in bfloat16): relative L2 to float32 0.045 instead of 0.050 on the
// tiny fixture (transformers' own: 0.042).
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "engine/model/model_config.h"
#include "engine/model/text_decoder.h"
#include "engine/model/weights.h"

namespace blip2::engine {

// One request's encoder input.
struct EncoderInput {
  std::vector<int64_t> token_ids;  // <image> placeholders, the prompt, </s>
  at::Tensor image_embeds;         // [Q, d_model]: the projected queries for the placeholders
};

class T5Model : public TextDecoder {
 public:
  // Reads `language_model.*` in `dtype`. `image_token_index` marks the
  // placeholder tokens whose embeddings the image queries replace.
  static absl::StatusOr<T5Model> Load(const WeightLoader& weights, const T5Config& config,
                                      std::optional<int64_t> image_token_index, at::ScalarType dtype);

  // Encoder states of a batch of requests, each [L_i, d_model] (padded to the
  // longest and masked, so each equals its request encoded alone).
  std::vector<at::Tensor> Encode(const std::vector<EncoderInput>& inputs) const;
  at::Tensor Encode(const at::Tensor& image_embeds, const std::vector<int64_t>& input_ids) const;
  // Every decoder layer's cross-attention keys and values of these states.
  std::shared_ptr<const CrossAttentionKv> CrossAttention(const at::Tensor& encoder_states) const;

  // Decoder steps: DecoderInput::token_ids are decoder ids (the first
  // prefill starts with decoder_start_token_id); `cross` is required.
  at::Tensor Step(const std::vector<DecoderInput>& inputs, KvCache& cache) const override;
  KvCache MakeCache(int64_t num_blocks, int64_t block_size) const override;
  KvCache MakeSlotCache(int64_t slots, int64_t max_len) const override;

  // float32 logits [n, vocab] for every position of `decoder_ids`, in one
  // prefill through a fresh cache (parity checks).
  at::Tensor Decode(const at::Tensor& encoder_states, const std::vector<int64_t>& decoder_ids) const;

  const T5Config& config() const { return config_; }
  at::Device device() const { return shared_.device(); }
  at::ScalarType dtype() const { return dtype_; }

 private:
  struct Attention {
    Linear q, k, v, o;
  };
  struct FeedForward {
    Linear wi_0, wi_1, wo;  // gated: act(wi_0 x) * wi_1 x
    Linear wi;              // not gated: act(wi x)
  };
  struct Block {
    at::Tensor self_norm, cross_norm, ff_norm;  // RMS norm weights
    Attention self_attention, cross_attention;
    FeedForward ff;
  };

  at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight) const;
  at::Tensor Feed(const FeedForward& f, const at::Tensor& x) const;
  // [rows, d] -> [rows, heads, d_kv]
  at::Tensor Heads(const Linear& proj, const at::Tensor& x) const;
  // Adds a sub-layer's output to the residual stream (float32 under float16).
  at::Tensor Residual(const at::Tensor& h, const at::Tensor& out) const;
  at::Tensor Head(at::Tensor h) const;  // final norm, scaling, lm_head: float32 logits

  T5Config config_;
  std::optional<int64_t> image_token_index_;
  at::ScalarType dtype_ = at::kFloat;
  at::ScalarType residual_dtype_ = at::kFloat;
  at::Tensor shared_;  // [vocab, d_model] input embeddings
  at::Tensor lm_head_;
  at::Tensor encoder_bias_table_, decoder_bias_table_;  // [buckets, heads]
  std::vector<Block> encoder_, decoder_;
  at::Tensor encoder_norm_, decoder_norm_;
};

}  // namespace blip2::engine
