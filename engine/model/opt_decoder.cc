#include "engine/model/opt_decoder.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/model/torch_util.h"

namespace blip2::engine {
namespace {

// OPT's learned positions are stored with an offset of 2 (padding rows).
constexpr int64_t kPositionOffset = 2;
// OPT builds its LayerNorms without an eps: PyTorch's default.
constexpr double kOptLayerNormEps = 1e-5;

}  // namespace

absl::StatusOr<OptDecoder> OptDecoder::Load(const WeightLoader& w, const OptConfig& c,
                                            std::optional<int64_t> image_token_index, at::ScalarType dtype) {
  OptDecoder dec;
  dec.config_ = c;
  dec.image_token_index_ = image_token_index;
  dec.dtype_ = dtype;
  const std::string p = "language_model.model.decoder.";
  const int64_t d = c.hidden_size;
  const bool bias = c.enable_bias;
  const bool affine = c.layer_norm_elementwise_affine;
  ASSIGN_OR_RETURN(dec.embed_tokens_, w.Get(p + "embed_tokens.weight", {c.vocab_size, c.word_embed_proj_dim}, dtype));
  ASSIGN_OR_RETURN(dec.embed_positions_,
                   w.Get(p + "embed_positions.weight", {c.max_position_embeddings + kPositionOffset, d}, dtype));
  if (c.word_embed_proj_dim != d) {
    ASSIGN_OR_RETURN(dec.project_in_, LoadLinear(w, p + "project_in", c.word_embed_proj_dim, d, dtype, false));
    ASSIGN_OR_RETURN(dec.project_out_, LoadLinear(w, p + "project_out", d, c.word_embed_proj_dim, dtype, false));
  }
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string lp = absl::StrCat(p, "layers.", i, ".");
    Layer layer;
    ASSIGN_OR_RETURN(layer.q, LoadLinear(w, lp + "self_attn.q_proj", d, d, dtype, bias));
    ASSIGN_OR_RETURN(layer.k, LoadLinear(w, lp + "self_attn.k_proj", d, d, dtype, bias));
    ASSIGN_OR_RETURN(layer.v, LoadLinear(w, lp + "self_attn.v_proj", d, d, dtype, bias));
    ASSIGN_OR_RETURN(layer.out, LoadLinear(w, lp + "self_attn.out_proj", d, d, dtype, bias));
    ASSIGN_OR_RETURN(layer.fc1, LoadLinear(w, lp + "fc1", d, c.ffn_dim, dtype, bias));
    ASSIGN_OR_RETURN(layer.fc2, LoadLinear(w, lp + "fc2", c.ffn_dim, d, dtype, bias));
    ASSIGN_OR_RETURN(layer.attn_norm, LoadLayerNorm(w, lp + "self_attn_layer_norm", d, kOptLayerNormEps, dtype, affine));
    ASSIGN_OR_RETURN(layer.mlp_norm, LoadLayerNorm(w, lp + "final_layer_norm", d, kOptLayerNormEps, dtype, affine));
    dec.layers_.push_back(std::move(layer));
  }
  if (c.do_layer_norm_before && !c.remove_final_layer_norm) {
    ASSIGN_OR_RETURN(dec.final_norm_, LoadLayerNorm(w, p + "final_layer_norm", d, kOptLayerNormEps, dtype, affine));
  }
  // The head is tied to the input embeddings; checkpoints may store a copy.
  if (w.Has("language_model.lm_head.weight")) {
    ASSIGN_OR_RETURN(dec.lm_head_, w.Get("language_model.lm_head.weight", {c.vocab_size, c.word_embed_proj_dim}, dtype));
  } else {
    dec.lm_head_ = dec.embed_tokens_;
  }
  return dec;
}

KvCache OptDecoder::MakeCache(int64_t num_blocks, int64_t block_size) const {
  const int64_t heads = config_.num_attention_heads;
  return KvCache(config_.num_hidden_layers, num_blocks, block_size, heads, config_.hidden_size / heads, dtype_,
                 device());
}

KvCache OptDecoder::MakeSlotCache(int64_t slots, int64_t max_len) const {
  const int64_t heads = config_.num_attention_heads;
  return KvCache::ForSlots(config_.num_hidden_layers, slots, max_len, heads, config_.hidden_size / heads, dtype_,
                           device());
}

at::Tensor OptDecoder::Step(const std::vector<DecoderInput>& inputs, KvCache& cache) const {
  return Run(inputs, cache, /*logits=*/true);
}

at::Tensor OptDecoder::HiddenStates(const std::vector<DecoderInput>& inputs, KvCache& cache) const {
  return Run(inputs, cache, /*logits=*/false);
}

at::Tensor OptDecoder::Run(const std::vector<DecoderInput>& inputs, KvCache& cache, bool logits) const {
  const at::Device dev = device();
  const int64_t d = config_.hidden_size;
  const int64_t heads = config_.num_attention_heads;
  const int64_t head_dim = d / heads;
  const double scaling = std::pow(static_cast<double>(head_dim), -0.5);

  // Every index the step needs is built on the host first, then sent to the
  // device in one copy (IndexUpload), so nothing below waits for the device.
  IndexUpload upload;
  // Pack every input's new tokens into one [T, ...] batch.
  std::vector<int64_t> ids, positions, logit_rows;
  for (const DecoderInput& in : inputs) {
    for (size_t j = 0; j < in.token_ids.size(); ++j) {
      ids.push_back(in.token_ids[j]);
      positions.push_back(in.cached + static_cast<int64_t>(j) + kPositionOffset);
      if (in.all_logits || j + 1 == in.token_ids.size()) logit_rows.push_back(static_cast<int64_t>(ids.size()) - 1);
    }
  }
  const size_t ids_at = upload.Add(ids), positions_at = upload.Add(positions), logit_rows_at = upload.Add(logit_rows);
  // Rows where projected Q-Former outputs take the place of the <image> placeholders.
  std::vector<std::pair<size_t, const at::Tensor*>> image_rows;  // upload handle, embeddings
  int64_t offset = 0;
  for (const DecoderInput& in : inputs) {
    if (in.image_embeds.defined() && image_token_index_) {
      std::vector<int64_t> rows;
      for (size_t j = 0; j < in.token_ids.size(); ++j) {
        if (in.token_ids[j] == *image_token_index_) rows.push_back(offset + static_cast<int64_t>(j));
      }
      TORCH_CHECK(static_cast<int64_t>(rows.size()) == in.image_embeds.size(0), "expected ", in.image_embeds.size(0),
                  " <image> tokens, found ", rows.size());
      image_rows.emplace_back(upload.Add(rows), &in.image_embeds);
    }
    offset += static_cast<int64_t>(in.token_ids.size());
  }

  // Storage rows, computed once for every layer. New tokens' rows (writes);
  // single-token decodes attend as one padded batch; prefills one by one.
  std::vector<int64_t> write_rows;
  std::vector<int64_t> decode_token_rows, decode_cache_rows, prefill_index;
  std::vector<int64_t> decode_lengths;
  int64_t longest = 0;
  {
    int64_t row = 0;
    for (size_t i = 0; i < inputs.size(); ++i) {
      const DecoderInput& in = inputs[i];
      const int64_t n = static_cast<int64_t>(in.token_ids.size());
      cache.AppendRows(in.blocks, in.cached, n, &write_rows);
      if (n == 1) {
        decode_token_rows.push_back(row);
        decode_lengths.push_back(in.cached + 1);
        longest = std::max(longest, in.cached + 1);
      } else {
        prefill_index.push_back(static_cast<int64_t>(i));
      }
      row += n;
    }
    // Decode batch: each sequence's rows padded (with its own first row) to the longest.
    for (size_t i = 0, d = 0; i < inputs.size(); ++i) {
      if (inputs[i].token_ids.size() != 1) continue;
      const size_t before = decode_cache_rows.size();
      cache.AppendRows(inputs[i].blocks, 0, decode_lengths[d], &decode_cache_rows);
      decode_cache_rows.resize(before + longest, decode_cache_rows[before]);
      ++d;
    }
  }
  const auto long_options = at::TensorOptions().dtype(at::kLong).device(dev);
  const size_t write_rows_at = upload.Add(write_rows);
  const int64_t num_decodes = static_cast<int64_t>(decode_token_rows.size());
  const size_t decode_tokens_at = upload.Add(decode_token_rows), decode_rows_at = upload.Add(decode_cache_rows),
               decode_lengths_at = upload.Add(decode_lengths);
  const bool ragged = std::any_of(decode_lengths.begin(), decode_lengths.end(), [&](int64_t l) { return l != longest; });
  // Prefill batch: queries padded to the longest prefill, keys to the longest
  // sequence; padded query rows look at key 0 only and are dropped afterwards.
  const int64_t num_prefills = static_cast<int64_t>(prefill_index.size());
  std::vector<int64_t> query_rows, valid_rows, key_rows;
  std::vector<int64_t> mask;  // 0/1, [P, 1, Lq, Lk]
  int64_t query_len = 0, key_len = 0;
  if (num_prefills > 0) {
    std::vector<int64_t> starts(inputs.size());
    for (size_t i = 0, row = 0; i < inputs.size(); ++i) {
      starts[i] = static_cast<int64_t>(row);
      row += inputs[i].token_ids.size();
    }
    for (int64_t i : prefill_index) {
      query_len = std::max<int64_t>(query_len, static_cast<int64_t>(inputs[i].token_ids.size()));
      key_len = std::max<int64_t>(key_len, inputs[i].cached + static_cast<int64_t>(inputs[i].token_ids.size()));
    }
    mask.assign(num_prefills * query_len * key_len, 0);
    for (int64_t b = 0; b < num_prefills; ++b) {
      const DecoderInput& in = inputs[prefill_index[b]];
      const int64_t n = static_cast<int64_t>(in.token_ids.size());
      for (int64_t q = 0; q < query_len; ++q) {
        query_rows.push_back(starts[prefill_index[b]] + std::min(q, n - 1));
        if (q < n) valid_rows.push_back(b * query_len + q);
        for (int64_t k = 0; k < key_len; ++k) {
          // New token q sees the cache and the new tokens up to itself.
          const bool visible = q < n ? k <= in.cached + q : k == 0;
          mask[(b * query_len + q) * key_len + k] = visible;
        }
      }
      const size_t before = key_rows.size();
      cache.AppendRows(in.blocks, 0, in.cached + n, &key_rows);
      key_rows.resize(before + key_len, key_rows[before]);
    }
  }
  std::vector<int64_t> prefill_token_rows;  // the new tokens of every prefill, in batch order
  for (int64_t i : prefill_index) {
    int64_t start = 0;
    for (int64_t j = 0; j < i; ++j) start += static_cast<int64_t>(inputs[j].token_ids.size());
    for (size_t t = 0; t < inputs[i].token_ids.size(); ++t) prefill_token_rows.push_back(start + static_cast<int64_t>(t));
  }
  const size_t query_rows_at = upload.Add(query_rows), valid_rows_at = upload.Add(valid_rows),
               key_rows_at = upload.Add(key_rows), mask_at = upload.Add(mask),
               prefill_tokens_at = upload.Add(prefill_token_rows);

  // Everything on the device from here.
  upload.Upload(dev);
  at::Tensor h = embed_tokens_.index_select(0, upload.Get(ids_at));
  for (const auto& [rows_at, embeds] : image_rows) h.index_copy_(0, upload.Get(rows_at), embeds->to(dtype_));
  if (project_in_) h = (*project_in_)(h);
  h = h + embed_positions_.index_select(0, upload.Get(positions_at));
  const at::Tensor write_index = upload.Get(write_rows_at);
  at::Tensor decode_tokens, decode_rows, decode_mask;
  if (num_decodes > 0) {
    decode_tokens = upload.Get(decode_tokens_at);
    decode_rows = upload.Get(decode_rows_at);
    if (ragged) {  // [B, 1, 1, longest]: true where a key is the sequence's own
      const at::Tensor lengths = upload.Get(decode_lengths_at).unsqueeze(1);
      decode_mask = (at::arange(longest, long_options).unsqueeze(0) < lengths).view({num_decodes, 1, 1, longest});
    }
  }
  at::Tensor prefill_query_rows, prefill_valid_rows, prefill_key_rows, prefill_mask, prefill_tokens;
  if (num_prefills > 0) {
    prefill_query_rows = upload.Get(query_rows_at);
    prefill_valid_rows = upload.Get(valid_rows_at);
    prefill_key_rows = upload.Get(key_rows_at);
    prefill_mask = upload.Get(mask_at).view({num_prefills, 1, query_len, key_len}).to(at::kBool);
    prefill_tokens = upload.Get(prefill_tokens_at);
  }

  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& layer = layers_[l];
    at::Tensor residual = h;
    at::Tensor x = config_.do_layer_norm_before ? (*layer.attn_norm)(h) : h;
    // transformers scales q before the product and calls attention with scale 1.
    const at::Tensor q = (layer.q(x) * scaling).view({-1, heads, head_dim});  // [T, H, hd]
    at::Tensor& keys = cache.keys(static_cast<int64_t>(l));
    at::Tensor& values = cache.values(static_cast<int64_t>(l));
    keys.index_copy_(0, write_index, layer.k(x).view({-1, heads, head_dim}));
    values.index_copy_(0, write_index, layer.v(x).view({-1, heads, head_dim}));
    at::Tensor attn = at::empty_like(q);
    if (num_decodes > 0) {
      const at::Tensor qd = q.index_select(0, decode_tokens).unsqueeze(2);  // [B, H, 1, hd]
      const at::Tensor kd = keys.index_select(0, decode_rows).view({num_decodes, longest, heads, head_dim}).transpose(1, 2);
      const at::Tensor vd = values.index_select(0, decode_rows).view({num_decodes, longest, heads, head_dim}).transpose(1, 2);
      std::optional<at::Tensor> mask;
      if (decode_mask.defined()) mask = decode_mask;
      const at::Tensor out = ScaledDotAttention(qd, kd, vd, mask, 1.0);  // [B, H, 1, hd]
      attn.index_copy_(0, decode_tokens, out.squeeze(2));
    }
    if (num_prefills > 0) {
      const at::Tensor qp = q.index_select(0, prefill_query_rows).view({num_prefills, query_len, heads, head_dim})
                                .transpose(1, 2);  // [P, H, Lq, hd]
      const at::Tensor kp =
          keys.index_select(0, prefill_key_rows).view({num_prefills, key_len, heads, head_dim}).transpose(1, 2);
      const at::Tensor vp =
          values.index_select(0, prefill_key_rows).view({num_prefills, key_len, heads, head_dim}).transpose(1, 2);
      const at::Tensor out = ScaledDotAttention(qp, kp, vp, prefill_mask, 1.0);
      const at::Tensor rows = out.transpose(1, 2).reshape({num_prefills * query_len, heads, head_dim});
      attn.index_copy_(0, prefill_tokens, rows.index_select(0, prefill_valid_rows));
    }
    h = residual + layer.out(attn.reshape({-1, d}));
    if (!config_.do_layer_norm_before) h = (*layer.attn_norm)(h);
    residual = h;
    x = config_.do_layer_norm_before ? (*layer.mlp_norm)(h) : h;
    h = residual + layer.fc2(Activate(layer.fc1(x), config_.activation_function));
    if (!config_.do_layer_norm_before) h = (*layer.mlp_norm)(h);
  }
  h = h.index_select(0, upload.Get(logit_rows_at));
  if (final_norm_) h = (*final_norm_)(h);
  if (project_out_) h = (*project_out_)(h);
  if (!logits) return h;
  return at::linear(h, lm_head_).to(at::kFloat);
}

}  // namespace blip2::engine
