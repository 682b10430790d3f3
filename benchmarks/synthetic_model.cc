#include "benchmarks/synthetic_model.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "engine/model/model_config.h"

namespace blip2::bench {
namespace {

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
constexpr char kGeneration[] = R"({"bos_token_id": 2, "eos_token_id": 50118, "pad_token_id": 1})";

// Collects tensor names and shapes first (the header), then generates and
// writes each tensor in turn, so memory holds one tensor at a time.
class StreamingWriter {
 public:
  void Normal(const std::string& name, std::vector<int64_t> shape) { Add(name, shape, 0.02, false); }
  void Constant(const std::string& name, std::vector<int64_t> shape, double value) { Add(name, shape, value, true); }
  void Linear(const std::string& p, int64_t in, int64_t out) {
    Normal(p + ".weight", {out, in});
    Constant(p + ".bias", {out}, 0.0);
  }
  void Norm(const std::string& p, int64_t dim) {
    Constant(p + ".weight", {dim}, 1.0);
    Constant(p + ".bias", {dim}, 0.0);
  }

  absl::Status Write(const std::string& path) {
    nlohmann::json header = nlohmann::json::object();
    uint64_t offset = 0;
    for (const Entry& e : entries_) {
      int64_t n = 1;
      for (int64_t d : e.shape) n *= d;
      header[e.name] = {{"dtype", "BF16"}, {"shape", e.shape}, {"data_offsets", {offset, offset + 2 * n}}};
      offset += 2 * n;
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) return absl::FailedPreconditionError("cannot create " + path);
    const uint64_t len = text.size();
    bool ok = std::fwrite(&len, 8, 1, f) == 1 && std::fwrite(text.data(), 1, text.size(), f) == text.size();
    at::Generator gen = at::detail::createCPUGenerator(0);
    for (const Entry& e : entries_) {
      const at::Tensor t = (e.constant ? at::full(e.shape, e.value) : at::normal(0.0, e.value, e.shape, gen))
                               .to(at::kBFloat16)
                               .contiguous();
      ok = ok && std::fwrite(t.data_ptr(), 1, t.nbytes(), f) == t.nbytes();
    }
    if (std::fclose(f) != 0 || !ok) return absl::DataLossError("write failed: " + path);
    return absl::OkStatus();
  }

 private:
  struct Entry {
    std::string name;
    std::vector<int64_t> shape;
    double value;
    bool constant;
  };
  void Add(const std::string& name, std::vector<int64_t> shape, double value, bool constant) {
    entries_.push_back({name, std::move(shape), value, constant});
  }
  std::vector<Entry> entries_;
};

absl::Status WriteText(const std::string& dir, const std::string& name, const char* text) {
  FILE* f = std::fopen(common::JoinPath(dir, name).c_str(), "w");
  if (f == nullptr) return absl::FailedPreconditionError(absl::StrCat("cannot write ", dir, "/", name));
  std::fputs(text, f);
  std::fclose(f);
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteSyntheticOpt27b(const std::string& dir, bool with_language_model) {
  ASSIGN_OR_RETURN(engine::Blip2Config c, engine::ParseBlip2Config(kConfig, "synthetic config.json"));
  StreamingWriter w;
  const engine::VisionConfig& v = c.vision;
  const int64_t d = v.hidden_size;
  w.Normal("vision_model.embeddings.patch_embedding.weight", {d, 3, v.patch_size, v.patch_size});
  w.Constant("vision_model.embeddings.patch_embedding.bias", {d}, 0.0);
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
  if (with_language_model) {
    const engine::OptConfig& o = c.opt;
    const std::string p = "language_model.model.decoder.";
    w.Normal(p + "embed_tokens.weight", {o.vocab_size, o.word_embed_proj_dim});
    w.Normal(p + "embed_positions.weight", {o.max_position_embeddings + 2, o.hidden_size});
    for (int64_t i = 0; i < o.num_hidden_layers; ++i) {
      const std::string lp = absl::StrCat(p, "layers.", i, ".");
      for (const char* proj : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
        w.Linear(lp + "self_attn." + proj, o.hidden_size, o.hidden_size);
      }
      w.Norm(lp + "self_attn_layer_norm", o.hidden_size);
      w.Linear(lp + "fc1", o.hidden_size, o.ffn_dim);
      w.Linear(lp + "fc2", o.ffn_dim, o.hidden_size);
      w.Norm(lp + "final_layer_norm", o.hidden_size);
    }
    w.Norm(p + "final_layer_norm", o.hidden_size);
  }
  RETURN_IF_ERROR(w.Write(common::JoinPath(dir, "model.safetensors")));
  RETURN_IF_ERROR(WriteText(dir, "config.json", kConfig));
  RETURN_IF_ERROR(WriteText(dir, "processor_config.json", kProcessor));
  return WriteText(dir, "generation_config.json", kGeneration);
}

absl::Status WithSyntheticOpt27b(bool with_language_model, const std::function<void(const std::string& dir)>& use) {
  const std::string dir = (std::filesystem::temp_directory_path() /
                           (with_language_model ? "blip2_synthetic_opt27b" : "blip2_synthetic_opt27b_image_path"))
                              .string();
  std::filesystem::create_directories(dir);
  const auto start = Clock::now();
  const absl::Status written = WriteSyntheticOpt27b(dir, with_language_model);
  if (written.ok()) {
    std::fprintf(stderr, "wrote a random blip2-opt-2.7b%s to %s in %.1f s\n",
                 with_language_model ? "" : " image path", dir.c_str(), SecondsSince(start));
    use(dir);
  }
  std::filesystem::remove_all(dir);
  return written;
}

absl::Status ForEachBenchModel(const common::CliFlags& flags, const std::string& tiny_dir, bool with_language_model,
                               const std::string& synthetic_label,
                               const std::function<void(const std::string& label, const std::string& dir)>& measure) {
  if (!flags.Has("skip-tiny")) measure("blip2-tiny-opt", flags.Get("tiny", tiny_dir));
  if (flags.Has("model")) measure(flags.Get("model", ""), flags.Get("model", ""));
  if (flags.Has("skip-synthetic")) return absl::OkStatus();
  return WithSyntheticOpt27b(with_language_model, [&](const std::string& dir) { measure(synthetic_label, dir); });
}

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

void SaveReport(const std::string& json_text, const std::string& path) {
  if (path.empty()) return;
  std::ofstream(path) << json_text << "\n";
  std::printf("\nwrote %s\n", path.c_str());
}

std::vector<float> RandomImage(const std::vector<int64_t>& shape, uint32_t seed) {
  static const std::vector<float> base = [&] {
    std::mt19937 rng(0);
    std::normal_distribution<float> normal(0.f, 1.f);
    std::vector<float> pixels(shape[0] * shape[1] * shape[2]);
    for (float& p : pixels) p = normal(rng);
    return pixels;
  }();
  std::vector<float> pixels = base;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  for (size_t i = 0; i < 4096; ++i) pixels[(seed * 4096 + i) % pixels.size()] = normal(rng);
  return pixels;
}

}  // namespace blip2::bench
