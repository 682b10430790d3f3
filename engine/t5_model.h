// The Flan-T5 language model of BLIP-2 (transformers' T5ForConditionalGeneration):
// an encoder over [image queries; prompt tokens] and a decoder with
// cross-attention. RMS LayerNorm with the variance in float32, relative
// position buckets (bidirectional in the encoder, causal in the decoder,
// computed once by the first layer and shared), no attention scaling, gated
// feed-forward, and the output head of the checkpoint (scaled by
// d_model^-0.5 first when the config says so). Internal (ATen).
//
// This is the full-recomputation path ([F], first part); the engine's paged
// decoder with a per-request cross-attention cache builds on it.
#pragma once

#include <optional>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "engine/model_config.h"
#include "engine/weights.h"

namespace blip2::engine {

class T5Model {
 public:
  // Reads `language_model.*` in `dtype`. `image_token_index` marks the
  // placeholder tokens whose embeddings the image queries replace.
  static absl::StatusOr<T5Model> Load(const WeightLoader& weights, const T5Config& config,
                                      std::optional<int64_t> image_token_index, at::ScalarType dtype);

  // Encoder states [L, d_model] for one request: `input_ids` with the
  // placeholders, `image_embeds` [Q, d_model] the projected queries.
  at::Tensor Encode(const at::Tensor& image_embeds, const std::vector<int64_t>& input_ids) const;
  // float32 logits [n, vocab] for every position of `decoder_ids` (which start
  // with decoder_start_token_id), attending to `encoder_states`.
  at::Tensor Decode(const at::Tensor& encoder_states, const std::vector<int64_t>& decoder_ids) const;

  // Incremental decoding of one sequence: the cross-attention keys and values
  // are computed once from the encoder states, the self-attention ones grow by
  // one token per step.
  struct DecodeState {
    std::vector<at::Tensor> self_k, self_v;    // per layer [H, t, hd]
    std::vector<at::Tensor> cross_k, cross_v;  // per layer [H, L, hd]
    int64_t length = 0;                        // tokens decoded so far
  };
  DecodeState StartDecoding(const at::Tensor& encoder_states) const;
  // float32 logits [vocab] after `token` (the first call takes
  // decoder_start_token_id); the same numbers as Decode's last row.
  at::Tensor DecodeStep(DecodeState& state, int64_t token) const;

  const T5Config& config() const { return config_; }
  at::Device device() const { return shared_.device(); }

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
  // [H, queries, keys] for query positions first_query.. and key positions 0..
  at::Tensor PositionBias(const at::Tensor& table, int64_t first_query, int64_t queries, int64_t keys,
                          bool bidirectional) const;
  at::Tensor Attend(const Attention& a, const at::Tensor& x, const at::Tensor& memory, const at::Tensor& bias) const;
  at::Tensor Feed(const FeedForward& f, const at::Tensor& x) const;
  // Attention of queries [H, q, hd] over keys and values [H, k, hd].
  at::Tensor AttendHeads(const Attention& a, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const at::Tensor& bias) const;
  at::Tensor Heads(const Linear& proj, const at::Tensor& x) const;  // [T, d] -> [H, T, hd]
  at::Tensor Head(at::Tensor h) const;  // final norm, scaling, lm_head: float32 logits

  T5Config config_;
  std::optional<int64_t> image_token_index_;
  at::ScalarType dtype_ = at::kFloat;
  at::Tensor shared_;  // [vocab, d_model] input embeddings
  at::Tensor lm_head_;
  at::Tensor encoder_bias_table_, decoder_bias_table_;  // [buckets, heads]
  std::vector<Block> encoder_, decoder_;
  at::Tensor encoder_norm_, decoder_norm_;
};

}  // namespace blip2::engine
