#include "benchmarks/synthetic_model.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/model_config.h"
#include "engine/safetensors.h"
#include "common/file_util.h"

namespace blip2::bench {
namespace {

using engine::DType;
using engine::TensorToWrite;

constexpr char kConfig[] = R"({
  "architectures": ["Blip2ForConditionalGeneration"],
  "model_type": "blip-2",
  "num_query_tokens": 32,
  "image_token_index": 50265,
  "qformer_config": {"model_type": "blip_2_qformer"},
  "vision_config": {"model_type": "blip_2_vision_model"},
  "text_config": {"model_type": "opt", "hidden_size": 2560, "ffn_dim": 10240, "num_attention_heads": 32,
                  "num_hidden_layers": 32, "vocab_size": 50304, "word_embed_proj_dim": 2560, "eos_token_id": 50118}
})";

constexpr char kProcessor[] = R"({"image_processor": {"size": {"height": 224, "width": 224}}, "num_query_tokens": 32})";

class Writer {
 public:
  explicit Writer(uint64_t seed) : gen_(at::detail::createCPUGenerator(seed)) {}

  void Normal(const std::string& name, std::vector<int64_t> shape, double std = 0.02) {
    Add(name, at::normal(0.0, std, shape, gen_));
  }
  void Fill(const std::string& name, std::vector<int64_t> shape, double value) {
    Add(name, at::full(shape, value));
  }
  void Linear(const std::string& p, int64_t in, int64_t out) {
    Normal(p + ".weight", {out, in});
    Fill(p + ".bias", {out}, 0.0);
  }
  void Norm(const std::string& p, int64_t dim) {
    Fill(p + ".weight", {dim}, 1.0);
    Fill(p + ".bias", {dim}, 0.0);
  }
  std::vector<TensorToWrite>& tensors() { return tensors_; }

 private:
  void Add(const std::string& name, const at::Tensor& t) {
    const at::Tensor b = t.to(at::kBFloat16).contiguous();
    tensors_.push_back({name, DType::kBF16, std::vector<int64_t>(b.sizes().begin(), b.sizes().end()),
                        std::string(static_cast<const char*>(b.data_ptr()), b.nbytes())});
  }

  at::Generator gen_;
  std::vector<TensorToWrite> tensors_;
};

}  // namespace

absl::Status WriteSyntheticOpt27bImagePath(const std::string& dir) {
  ASSIGN_OR_RETURN(engine::Blip2Config c, engine::ParseBlip2Config(kConfig, "synthetic config.json"));
  Writer w(0);
  const engine::VisionConfig& v = c.vision;
  const int64_t d = v.hidden_size;
  w.Normal("vision_model.embeddings.patch_embedding.weight", {d, 3, v.patch_size, v.patch_size});
  w.Fill("vision_model.embeddings.patch_embedding.bias", {d}, 0.0);
  w.Normal("vision_model.embeddings.class_embedding", {1, 1, d});
  w.Normal("vision_model.embeddings.position_embedding", {1, v.sequence_length(), d});
  for (int64_t i = 0; i < v.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("vision_model.encoder.layers.", i, ".");
    w.Norm(p + "layer_norm1", d);
    w.Norm(p + "layer_norm2", d);
    w.Linear(p + "self_attn.qkv", d, 3 * d);
    w.Linear(p + "self_attn.projection", d, d);
    w.Linear(p + "mlp.fc1", d, v.intermediate_size);
    w.Linear(p + "mlp.fc2", v.intermediate_size, d);
  }
  w.Norm("vision_model.post_layernorm", d);
  const engine::QFormerConfig& q = c.qformer;
  const int64_t h = q.hidden_size;
  w.Normal("query_tokens", {1, c.num_query_tokens, h});
  w.Norm("qformer.layernorm", h);
  for (int64_t i = 0; i < q.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("qformer.encoder.layer.", i, ".");
    for (const std::string block : {"attention", "crossattention"}) {
      if (block == "crossattention" && !q.HasCrossAttention(i)) continue;
      const int64_t kv_in = block == "attention" ? h : q.encoder_hidden_size;
      w.Linear(p + block + ".attention.query", h, h);
      w.Linear(p + block + ".attention.key", kv_in, h);
      w.Linear(p + block + ".attention.value", kv_in, h);
      w.Linear(p + block + ".output.dense", h, h);
      w.Norm(p + block + ".output.LayerNorm", h);
    }
    w.Linear(p + "intermediate_query.dense", h, q.intermediate_size);
    w.Linear(p + "output_query.dense", q.intermediate_size, h);
    w.Norm(p + "output_query.LayerNorm", h);
  }
  w.Linear("language_projection", h, c.language_hidden_size());
  RETURN_IF_ERROR(engine::WriteSafetensors(common::JoinPath(dir, "model.safetensors"), w.tensors()));
  for (const auto& [name, text] : {std::pair{"config.json", kConfig}, {"processor_config.json", kProcessor}}) {
    FILE* f = std::fopen(common::JoinPath(dir, name).c_str(), "w");
    if (f == nullptr) return absl::FailedPreconditionError(absl::StrCat("cannot write ", dir, "/", name));
    std::fputs(text, f);
    std::fclose(f);
  }
  return absl::OkStatus();
}

}  // namespace blip2::bench
