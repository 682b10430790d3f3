#include "engine/model/t5_model.h"

#include <cmath>
#include <limits>
#include <map>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/model/torch_util.h"

namespace blip2::engine {
namespace {

// transformers' T5 relative position bucket for key - query = `distance`.
int64_t Bucket(int64_t distance, bool bidirectional, int64_t num_buckets, int64_t max_distance) {
  int64_t bucket = 0;
  if (bidirectional) {
    num_buckets /= 2;
    if (distance > 0) bucket += num_buckets;
    distance = std::abs(distance);
  } else {
    distance = -std::min<int64_t>(distance, 0);
  }
  const int64_t max_exact = num_buckets / 2;
  if (distance < max_exact) return bucket + distance;
  // As transformers computes it: in float32, then truncated.
  const float large = static_cast<float>(max_exact) +
                      std::log(static_cast<float>(distance) / static_cast<float>(max_exact)) /
                          static_cast<float>(std::log(static_cast<double>(max_distance) / max_exact)) *
                          static_cast<float>(num_buckets - max_exact);
  return bucket + std::min<int64_t>(static_cast<int64_t>(large), num_buckets - 1);
}

}  // namespace

absl::StatusOr<T5Model> T5Model::Load(const WeightLoader& w, const T5Config& c,
                                      std::optional<int64_t> image_token_index, at::ScalarType dtype) {
  T5Model m;
  m.config_ = c;
  m.image_token_index_ = image_token_index;
  m.dtype_ = dtype;
  m.residual_dtype_ = at::kFloat;
  const std::string p = "language_model.";
  const int64_t d = c.d_model, inner = c.num_heads * c.d_kv;
  ASSIGN_OR_RETURN(m.shared_, w.Get(p + "shared.weight", {c.vocab_size, d}, dtype));
  // The released Flan-T5 layout stores its own head; tied checkpoints reuse the embeddings.
  if (w.Has(p + "lm_head.weight")) {
    ASSIGN_OR_RETURN(m.lm_head_, w.Get(p + "lm_head.weight", {c.vocab_size, d}, dtype));
  } else {
    m.lm_head_ = m.shared_;
  }
  const auto load_attention = [&](const std::string& prefix) -> absl::StatusOr<Attention> {
    Attention a;
    ASSIGN_OR_RETURN(a.q, LoadLinear(w, prefix + "q", d, inner, dtype, false));
    ASSIGN_OR_RETURN(a.k, LoadLinear(w, prefix + "k", d, inner, dtype, false));
    ASSIGN_OR_RETURN(a.v, LoadLinear(w, prefix + "v", d, inner, dtype, false));
    ASSIGN_OR_RETURN(a.o, LoadLinear(w, prefix + "o", inner, d, dtype, false));
    return a;
  };
  const auto load_ff = [&](const std::string& prefix) -> absl::StatusOr<FeedForward> {
    FeedForward f;
    if (c.is_gated_act) {
      ASSIGN_OR_RETURN(f.wi_0, LoadLinear(w, prefix + "wi_0", d, c.d_ff, dtype, false));
      ASSIGN_OR_RETURN(f.wi_1, LoadLinear(w, prefix + "wi_1", d, c.d_ff, dtype, false));
    } else {
      ASSIGN_OR_RETURN(f.wi, LoadLinear(w, prefix + "wi", d, c.d_ff, dtype, false));
    }
    // transformers keeps `wo` in float32 when it loads T5 in float16.
    ASSIGN_OR_RETURN(f.wo, LoadLinear(w, prefix + "wo", c.d_ff, d, dtype == at::kHalf ? at::kFloat : dtype, false));
    return f;
  };
  for (const bool decoder : {false, true}) {
    const std::string stack = p + (decoder ? "decoder." : "encoder.");
    const int64_t layers = decoder ? c.num_decoder_layers : c.num_layers;
    for (int64_t i = 0; i < layers; ++i) {
      const std::string bp = absl::StrCat(stack, "block.", i, ".layer.");
      Block b;
      ASSIGN_OR_RETURN(b.self_attention, load_attention(bp + "0.SelfAttention."));
      ASSIGN_OR_RETURN(b.self_norm, w.Get(bp + "0.layer_norm.weight", {d}, dtype));
      const std::string ff = decoder ? "2" : "1";
      if (decoder) {
        ASSIGN_OR_RETURN(b.cross_attention, load_attention(bp + "1.EncDecAttention."));
        ASSIGN_OR_RETURN(b.cross_norm, w.Get(bp + "1.layer_norm.weight", {d}, dtype));
      }
      ASSIGN_OR_RETURN(b.ff, load_ff(bp + ff + ".DenseReluDense."));
      ASSIGN_OR_RETURN(b.ff_norm, w.Get(bp + ff + ".layer_norm.weight", {d}, dtype));
      (decoder ? m.decoder_ : m.encoder_).push_back(std::move(b));
    }
    // Only the first block holds the position table; every block uses it.
    at::Tensor& table = decoder ? m.decoder_bias_table_ : m.encoder_bias_table_;
    ASSIGN_OR_RETURN(table, w.Get(stack + "block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                                  {c.relative_attention_num_buckets, c.num_heads}, dtype));
    at::Tensor& final_norm = decoder ? m.decoder_norm_ : m.encoder_norm_;
    ASSIGN_OR_RETURN(final_norm, w.Get(stack + "final_layer_norm.weight", {d}, dtype));
  }
  return m;
}

int64_t CrossAttentionKv::bytes() const {
  int64_t total = 0;
  for (const at::Tensor& t : keys) total += t.numel() * t.element_size();
  for (const at::Tensor& t : values) total += t.numel() * t.element_size();
  return total;
}

at::Tensor T5Model::RmsNorm(const at::Tensor& x, const at::Tensor& weight) const {
  // The variance in float32, then back to the weights' dtype, as transformers does.
  const at::Tensor variance = x.to(at::kFloat).pow(2).mean(-1, /*keepdim=*/true);
  const at::Tensor normed = x.to(at::kFloat) * at::rsqrt(variance + config_.layer_norm_epsilon);
  return weight * normed.to(weight.scalar_type());
}

at::Tensor T5Model::Heads(const Linear& proj, const at::Tensor& x) const {
  return proj(x).view({-1, config_.num_heads, config_.d_kv});
}

at::Tensor T5Model::Residual(const at::Tensor& h, const at::Tensor& out) const {
  return h + out.to(residual_dtype_);
}

at::Tensor T5Model::Feed(const FeedForward& f, const at::Tensor& x) const {
  const at::Tensor hidden = config_.is_gated_act ? Activate(f.wi_0(x), config_.dense_act_fn) * f.wi_1(x)
                                                 : Activate(f.wi(x), config_.dense_act_fn);
  return f.wo(hidden.to(f.wo.dtype()));
}

at::Tensor T5Model::Head(at::Tensor h) const {
  h = RmsNorm(h, decoder_norm_);
  if (config_.scale_decoder_outputs) h = h * std::pow(static_cast<double>(config_.d_model), -0.5);
  return at::linear(h, lm_head_).to(at::kFloat);
}

std::vector<at::Tensor> T5Model::Encode(const std::vector<EncoderInput>& inputs) const {
  const int64_t batch = static_cast<int64_t>(inputs.size());
  const int64_t heads = config_.num_heads, d_kv = config_.d_kv;
  int64_t len = 0;
  for (const EncoderInput& in : inputs) len = std::max<int64_t>(len, static_cast<int64_t>(in.token_ids.size()));
  // Host indices first, one upload (see IndexUpload).
  IndexUpload upload;
  std::vector<int64_t> ids(batch * len, config_.pad_token_id), image_rows, key_valid(batch * len, 0);
  std::vector<at::Tensor> image_embeds;
  for (int64_t b = 0; b < batch; ++b) {
    const EncoderInput& in = inputs[b];
    int64_t placeholders = 0;
    for (size_t j = 0; j < in.token_ids.size(); ++j) {
      const int64_t row = b * len + static_cast<int64_t>(j);
      ids[row] = in.token_ids[j];
      key_valid[row] = 1;
      if (in.image_embeds.defined() && image_token_index_ && in.token_ids[j] == *image_token_index_) {
        image_rows.push_back(row);
        ++placeholders;
      }
    }
    if (in.image_embeds.defined()) {
      TORCH_CHECK(placeholders == in.image_embeds.size(0), "expected ", in.image_embeds.size(0),
                  " <image> tokens, found ", placeholders);
      image_embeds.push_back(in.image_embeds);
    }
  }
  std::vector<int64_t> buckets(len * len);
  for (int64_t q = 0; q < len; ++q) {
    for (int64_t k = 0; k < len; ++k) {
      buckets[q * len + k] = Bucket(k - q, /*bidirectional=*/true, config_.relative_attention_num_buckets,
                                    config_.relative_attention_max_distance);
    }
  }
  const size_t ids_at = upload.Add(ids), image_rows_at = upload.Add(image_rows), valid_at = upload.Add(key_valid),
               buckets_at = upload.Add(buckets);
  upload.Upload(device());

  at::Tensor h = shared_.index_select(0, upload.Get(ids_at));
  if (!image_rows.empty()) h.index_copy_(0, upload.Get(image_rows_at), at::cat(image_embeds).to(dtype_));
  h = h.to(residual_dtype_);
  // [B, H, L, L]: the shared position bias, padded keys masked out.
  const at::Tensor padded = (upload.Get(valid_at) == 0).view({batch, 1, 1, len});
  const at::Tensor bias = encoder_bias_table_.index_select(0, upload.Get(buckets_at))
                              .view({1, len, len, heads})
                              .permute({0, 3, 1, 2})
                              .masked_fill(padded, -std::numeric_limits<float>::infinity());
  for (const Block& b : encoder_) {
    const at::Tensor x = RmsNorm(h, b.self_norm);
    const auto split = [&](const Linear& proj) { return Heads(proj, x).view({batch, len, heads, d_kv}).transpose(1, 2); };
    // No 1/sqrt(d) scaling in T5.
    const at::Tensor out = ScaledDotAttention(split(b.self_attention.q), split(b.self_attention.k), split(b.self_attention.v), bias, 1.0);
    h = Residual(h, b.self_attention.o(out.transpose(1, 2).reshape({batch * len, heads * d_kv})));
    h = Residual(h, Feed(b.ff, RmsNorm(h, b.ff_norm)));
  }
  const at::Tensor states = RmsNorm(h, encoder_norm_).view({batch, len, -1});
  std::vector<at::Tensor> out;
  for (int64_t b = 0; b < batch; ++b) {
    out.push_back(states[b].narrow(0, 0, static_cast<int64_t>(inputs[b].token_ids.size())));
  }
  return out;
}

at::Tensor T5Model::Encode(const at::Tensor& image_embeds, const std::vector<int64_t>& input_ids) const {
  return Encode(std::vector<EncoderInput>{{input_ids, image_embeds}})[0];
}

std::shared_ptr<const CrossAttentionKv> T5Model::CrossAttention(const at::Tensor& encoder_states) const {
  auto cross = std::make_shared<CrossAttentionKv>();
  cross->length = encoder_states.size(0);
  for (const Block& b : decoder_) {
    cross->keys.push_back(Heads(b.cross_attention.k, encoder_states));
    cross->values.push_back(Heads(b.cross_attention.v, encoder_states));
  }
  return cross;
}

KvCache T5Model::MakeCache(int64_t num_blocks, int64_t block_size) const {
  return KvCache(config_.num_decoder_layers, num_blocks, block_size, config_.num_heads, config_.d_kv, dtype_, device());
}

KvCache T5Model::MakeSlotCache(int64_t slots, int64_t max_len) const {
  return KvCache::ForSlots(config_.num_decoder_layers, slots, max_len, config_.num_heads, config_.d_kv, dtype_,
                           device());
}

at::Tensor T5Model::Step(const std::vector<DecoderInput>& inputs, KvCache& cache) const {
  const int64_t batch = static_cast<int64_t>(inputs.size());
  const int64_t heads = config_.num_heads, d_kv = config_.d_kv, inner = heads * d_kv;
  // Every sequence's queries padded to the longest (Lq), its self-attention
  // keys to the longest sequence (Lk) and its cross-attention keys to the
  // longest encoder output (Lc); one batched attention each. Padded query
  // rows see key 0 only and are dropped.
  int64_t query_len = 0, key_len = 0, cross_len = 0;
  for (const DecoderInput& in : inputs) {
    TORCH_CHECK(in.cross != nullptr, "a T5 decoder step needs the request's cross-attention keys and values");
    const int64_t n = static_cast<int64_t>(in.token_ids.size());
    query_len = std::max(query_len, n);
    key_len = std::max(key_len, in.cached + n);
    cross_len = std::max(cross_len, in.cross->length);
  }
  IndexUpload upload;
  std::vector<int64_t> ids, logit_rows, write_rows, query_rows, valid_rows, key_rows, buckets, visible;
  std::vector<int64_t> cross_rows, cross_visible;
  // Requests with several sequences (beams) share one CrossAttentionKv: each
  // distinct one is packed once.
  std::map<const CrossAttentionKv*, int64_t> cross_offset;
  std::vector<const CrossAttentionKv*> crosses;
  int64_t cross_total = 0;
  for (int64_t b = 0; b < batch; ++b) {
    const DecoderInput& in = inputs[b];
    const int64_t n = static_cast<int64_t>(in.token_ids.size());
    const int64_t first = static_cast<int64_t>(ids.size());
    for (int64_t j = 0; j < n; ++j) {
      ids.push_back(in.token_ids[j]);
      if (in.all_logits || j + 1 == n) logit_rows.push_back(first + j);
    }
    cache.AppendRows(in.blocks, in.cached, n, &write_rows);
    const size_t keys_before = key_rows.size();
    cache.AppendRows(in.blocks, 0, in.cached + n, &key_rows);
    key_rows.resize(keys_before + key_len, key_rows[keys_before]);
    for (int64_t q = 0; q < query_len; ++q) {
      query_rows.push_back(first + std::min(q, n - 1));
      if (q < n) valid_rows.push_back(b * query_len + q);
      for (int64_t k = 0; k < key_len; ++k) {
        const int64_t position = in.cached + q;  // the query's position
        visible.push_back(q < n ? k <= position : k == 0);
        buckets.push_back(q < n ? Bucket(k - position, /*bidirectional=*/false, config_.relative_attention_num_buckets,
                                         config_.relative_attention_max_distance)
                                : 0);
      }
    }
    auto [it, added] = cross_offset.emplace(in.cross.get(), cross_total);
    if (added) {
      crosses.push_back(in.cross.get());
      cross_total += in.cross->length;
    }
    for (int64_t k = 0; k < cross_len; ++k) {
      cross_rows.push_back(it->second + std::min(k, in.cross->length - 1));
      cross_visible.push_back(k < in.cross->length);
    }
  }
  const size_t ids_at = upload.Add(ids), logit_rows_at = upload.Add(logit_rows), write_at = upload.Add(write_rows),
               query_rows_at = upload.Add(query_rows), valid_rows_at = upload.Add(valid_rows),
               key_rows_at = upload.Add(key_rows), buckets_at = upload.Add(buckets), visible_at = upload.Add(visible),
               cross_rows_at = upload.Add(cross_rows), cross_visible_at = upload.Add(cross_visible);
  upload.Upload(device());

  at::Tensor h = shared_.index_select(0, upload.Get(ids_at)).to(residual_dtype_);
  const at::Tensor write_index = upload.Get(write_at), query_index = upload.Get(query_rows_at),
                   valid_index = upload.Get(valid_rows_at), key_index = upload.Get(key_rows_at),
                   cross_index = upload.Get(cross_rows_at);
  // [B, H, Lq, Lk]: causal relative position bias; [B, 1, 1, Lc]: real encoder positions.
  const at::Tensor self_bias = decoder_bias_table_.index_select(0, upload.Get(buckets_at))
                                   .view({batch, query_len, key_len, heads})
                                   .permute({0, 3, 1, 2})
                                   .masked_fill((upload.Get(visible_at) == 0).view({batch, 1, query_len, key_len}),
                                                -std::numeric_limits<float>::infinity());
  const at::Tensor cross_mask = (upload.Get(cross_visible_at) != 0).view({batch, 1, 1, cross_len});
  // [T, inner] -> [B, H, Lq, d_kv] and back.
  const auto pad_queries = [&](const at::Tensor& q) {
    return q.index_select(0, query_index).view({batch, query_len, heads, d_kv}).transpose(1, 2);
  };
  const auto unpad = [&](const at::Tensor& out) {
    return out.transpose(1, 2).reshape({batch * query_len, inner}).index_select(0, valid_index);
  };
  for (size_t l = 0; l < decoder_.size(); ++l) {
    const Block& b = decoder_[l];
    at::Tensor x = RmsNorm(h, b.self_norm);
    at::Tensor& keys = cache.keys(static_cast<int64_t>(l));
    at::Tensor& values = cache.values(static_cast<int64_t>(l));
    keys.index_copy_(0, write_index, Heads(b.self_attention.k, x));
    values.index_copy_(0, write_index, Heads(b.self_attention.v, x));
    const at::Tensor k = keys.index_select(0, key_index).view({batch, key_len, heads, d_kv}).transpose(1, 2);
    const at::Tensor v = values.index_select(0, key_index).view({batch, key_len, heads, d_kv}).transpose(1, 2);
    at::Tensor out = ScaledDotAttention(pad_queries(Heads(b.self_attention.q, x)), k, v, self_bias, 1.0);
    h = Residual(h, b.self_attention.o(unpad(out)));

    x = RmsNorm(h, b.cross_norm);
    std::vector<at::Tensor> ck, cv;
    for (const CrossAttentionKv* c : crosses) {
      ck.push_back(c->keys[l]);
      cv.push_back(c->values[l]);
    }
    const auto gather = [&](const std::vector<at::Tensor>& parts) {
      const at::Tensor all = parts.size() == 1 ? parts[0] : at::cat(parts);
      return all.index_select(0, cross_index).view({batch, cross_len, heads, d_kv}).transpose(1, 2);
    };
    out = ScaledDotAttention(pad_queries(Heads(b.cross_attention.q, x)), gather(ck), gather(cv), cross_mask, 1.0);
    h = Residual(h, b.cross_attention.o(unpad(out)));
    h = Residual(h, Feed(b.ff, RmsNorm(h, b.ff_norm)));
  }
  return Head(h.index_select(0, upload.Get(logit_rows_at)));
}

at::Tensor T5Model::Decode(const at::Tensor& encoder_states, const std::vector<int64_t>& decoder_ids) const {
  KvCache cache = MakeSlotCache(1, static_cast<int64_t>(decoder_ids.size()));
  DecoderInput in;
  in.blocks = cache.SlotBlocks(0);
  in.token_ids = decoder_ids;
  in.cross = CrossAttention(encoder_states);
  in.all_logits = true;
  return Step({in}, cache);
}

}  // namespace blip2::engine
