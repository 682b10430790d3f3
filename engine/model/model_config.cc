#include "engine/model/model_config.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/file_util.h"
#include "common/json_fields.h"
#include "common/status_macros.h"

namespace blip2::engine {
namespace {

using common::JsonFields;

absl::StatusOr<nlohmann::json> ParseJson(const std::string& text, const std::string& file) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(file, ": not valid JSON"));
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(file, ": expected a JSON object"));
  return j;
}

void ReadActivation(JsonFields& f, const std::string& key, Activation* out) {
  if (!f.HasValue(key)) return;
  auto act = ParseActivation(f.String(key, ""));
  if (!act.ok()) {
    f.Fail(key, std::string(act.status().message()));
    return;
  }
  *out = *act;
}

void RequirePositive(JsonFields& f, const std::string& key, int64_t value) {
  if (value <= 0) f.Fail(key, absl::StrCat("must be positive, got ", value));
}

void RequireDivisible(JsonFields& f, const std::string& key, int64_t value, int64_t by,
                      const std::string& by_name) {
  if (by > 0 && value % by != 0) {
    f.Fail(key, absl::StrCat(value, " is not divisible by ", by_name, " ", by));
  }
}

VisionConfig ReadVision(JsonFields f) {
  VisionConfig c;
  c.hidden_size = f.Int("hidden_size", c.hidden_size);
  c.intermediate_size = f.Int("intermediate_size", c.intermediate_size);
  c.num_hidden_layers = f.Int("num_hidden_layers", c.num_hidden_layers);
  c.num_attention_heads = f.Int("num_attention_heads", c.num_attention_heads);
  c.num_channels = f.Int("num_channels", c.num_channels);
  c.image_size = f.Int("image_size", c.image_size);
  c.patch_size = f.Int("patch_size", c.patch_size);
  c.layer_norm_eps = f.Double("layer_norm_eps", c.layer_norm_eps);
  c.qkv_bias = f.Bool("qkv_bias", c.qkv_bias);
  ReadActivation(f, "hidden_act", &c.hidden_act);
  for (auto [key, v] : {std::pair{"hidden_size", c.hidden_size}, {"intermediate_size", c.intermediate_size},
                        {"num_hidden_layers", c.num_hidden_layers}, {"num_attention_heads", c.num_attention_heads},
                        {"num_channels", c.num_channels}, {"image_size", c.image_size},
                        {"patch_size", c.patch_size}}) {
    RequirePositive(f, key, v);
  }
  RequireDivisible(f, "hidden_size", c.hidden_size, c.num_attention_heads, "num_attention_heads");
  RequireDivisible(f, "image_size", c.image_size, c.patch_size, "patch_size");
  if (c.layer_norm_eps <= 0) f.Fail("layer_norm_eps", "must be positive");
  return c;
}

QFormerConfig ReadQFormer(JsonFields f, int64_t vision_hidden) {
  QFormerConfig c;
  c.vocab_size = f.Int("vocab_size", c.vocab_size);
  c.hidden_size = f.Int("hidden_size", c.hidden_size);
  c.num_hidden_layers = f.Int("num_hidden_layers", c.num_hidden_layers);
  c.num_attention_heads = f.Int("num_attention_heads", c.num_attention_heads);
  c.intermediate_size = f.Int("intermediate_size", c.intermediate_size);
  c.max_position_embeddings = f.Int("max_position_embeddings", c.max_position_embeddings);
  c.cross_attention_frequency = f.Int("cross_attention_frequency", c.cross_attention_frequency);
  f.Int("encoder_hidden_size", 0);  // type-checked only: Blip2Config overrides it
  c.encoder_hidden_size = vision_hidden;
  c.pad_token_id = f.Int("pad_token_id", c.pad_token_id);
  c.layer_norm_eps = f.Double("layer_norm_eps", c.layer_norm_eps);
  // The first released ITM config spelled it "qformer_text_input".
  c.use_qformer_text_input = f.Bool("use_qformer_text_input", f.Bool("qformer_text_input", false));
  ReadActivation(f, "hidden_act", &c.hidden_act);
  for (auto [key, v] : {std::pair{"hidden_size", c.hidden_size}, {"num_hidden_layers", c.num_hidden_layers},
                        {"num_attention_heads", c.num_attention_heads}, {"intermediate_size", c.intermediate_size},
                        {"cross_attention_frequency", c.cross_attention_frequency},
                        {"vocab_size", c.vocab_size}, {"max_position_embeddings", c.max_position_embeddings}}) {
    RequirePositive(f, key, v);
  }
  RequireDivisible(f, "hidden_size", c.hidden_size, c.num_attention_heads, "num_attention_heads");
  if (c.layer_norm_eps <= 0) f.Fail("layer_norm_eps", "must be positive");
  return c;
}

OptConfig ReadOpt(JsonFields f) {
  OptConfig c;
  c.vocab_size = f.Int("vocab_size", c.vocab_size);
  c.hidden_size = f.Int("hidden_size", c.hidden_size);
  c.num_hidden_layers = f.Int("num_hidden_layers", c.num_hidden_layers);
  c.ffn_dim = f.Int("ffn_dim", c.ffn_dim);
  c.num_attention_heads = f.Int("num_attention_heads", c.num_attention_heads);
  c.max_position_embeddings = f.Int("max_position_embeddings", c.max_position_embeddings);
  c.word_embed_proj_dim = f.Int("word_embed_proj_dim", c.hidden_size);
  c.do_layer_norm_before = f.Bool("do_layer_norm_before", c.do_layer_norm_before);
  c.enable_bias = f.Bool("enable_bias", c.enable_bias);
  c.layer_norm_elementwise_affine = f.Bool("layer_norm_elementwise_affine", c.layer_norm_elementwise_affine);
  c.remove_final_layer_norm = f.Bool("_remove_final_layer_norm", c.remove_final_layer_norm);
  c.tie_word_embeddings = f.Bool("tie_word_embeddings", c.tie_word_embeddings);
  ReadActivation(f, "activation_function", &c.activation_function);
  c.pad_token_id = f.Int("pad_token_id", c.pad_token_id);
  c.bos_token_id = f.Int("bos_token_id", c.bos_token_id);
  c.eos_token_id = f.IntOrIntList("eos_token_id", c.eos_token_id);
  for (auto [key, v] : {std::pair{"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size},
                        {"num_hidden_layers", c.num_hidden_layers}, {"ffn_dim", c.ffn_dim},
                        {"num_attention_heads", c.num_attention_heads},
                        {"max_position_embeddings", c.max_position_embeddings},
                        {"word_embed_proj_dim", c.word_embed_proj_dim}}) {
    RequirePositive(f, key, v);
  }
  RequireDivisible(f, "hidden_size", c.hidden_size, c.num_attention_heads, "num_attention_heads");
  return c;
}

T5Config ReadT5(JsonFields f) {
  T5Config c;
  c.vocab_size = f.Int("vocab_size", c.vocab_size);
  c.d_model = f.Int("d_model", c.d_model);
  c.d_kv = f.Int("d_kv", c.d_kv);
  c.d_ff = f.Int("d_ff", c.d_ff);
  c.num_layers = f.Int("num_layers", c.num_layers);
  c.num_decoder_layers = f.Int("num_decoder_layers", c.num_layers);
  c.num_heads = f.Int("num_heads", c.num_heads);
  c.relative_attention_num_buckets = f.Int("relative_attention_num_buckets", c.relative_attention_num_buckets);
  c.relative_attention_max_distance = f.Int("relative_attention_max_distance", c.relative_attention_max_distance);
  c.layer_norm_epsilon = f.Double("layer_norm_epsilon", c.layer_norm_epsilon);
  c.feed_forward_proj = f.String("feed_forward_proj", c.feed_forward_proj);
  // T5Config derives the activation from feed_forward_proj ("gated-gelu" means
  // gelu_new); an explicit dense_act_fn in the file wins.
  std::vector<std::string> parts = absl::StrSplit(c.feed_forward_proj, '-');
  if (parts.size() > 2 || (parts.size() == 2 && parts[0] != "gated")) {
    f.Fail("feed_forward_proj", absl::StrCat("expected ACT or gated-ACT, got \"", c.feed_forward_proj, "\""));
  }
  c.is_gated_act = f.Bool("is_gated_act", parts.size() == 2);
  std::string act = c.feed_forward_proj == "gated-gelu" ? "gelu_new" : parts.back();
  act = f.String("dense_act_fn", act);
  auto parsed = ParseActivation(act);
  if (parsed.ok()) {
    c.dense_act_fn = *parsed;
  } else {
    f.Fail("dense_act_fn", std::string(parsed.status().message()));
  }
  c.tie_word_embeddings = f.Bool("tie_word_embeddings", c.tie_word_embeddings);
  c.scale_decoder_outputs = f.Bool("scale_decoder_outputs", c.tie_word_embeddings);
  c.decoder_start_token_id = f.Int("decoder_start_token_id", c.decoder_start_token_id);
  c.pad_token_id = f.Int("pad_token_id", c.pad_token_id);
  c.eos_token_id = f.IntOrIntList("eos_token_id", c.eos_token_id);
  for (auto [key, v] : {std::pair{"vocab_size", c.vocab_size}, {"d_model", c.d_model}, {"d_kv", c.d_kv},
                        {"d_ff", c.d_ff}, {"num_layers", c.num_layers},
                        {"num_decoder_layers", c.num_decoder_layers}, {"num_heads", c.num_heads},
                        {"relative_attention_num_buckets", c.relative_attention_num_buckets},
                        {"relative_attention_max_distance", c.relative_attention_max_distance}}) {
    RequirePositive(f, key, v);
  }
  return c;
}

bool IsRetrievalArchitecture(const std::string& arch) {
  return arch.find("Retrieval") != std::string::npos || arch.find("WithProjection") != std::string::npos;
}

}  // namespace

absl::StatusOr<Activation> ParseActivation(const std::string& name) {
  if (name == "gelu") return Activation::kGeluErf;
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") return Activation::kGeluTanh;
  if (name == "relu") return Activation::kRelu;
  if (name == "silu" || name == "swish") return Activation::kSilu;
  if (name == "quick_gelu") return Activation::kQuickGelu;
  return absl::InvalidArgumentError(absl::StrCat("unsupported activation \"", name, "\""));
}

int64_t Blip2Config::language_hidden_size() const {
  switch (language_model) {
    case LanguageModelKind::kOpt: return opt.word_embed_proj_dim;
    case LanguageModelKind::kT5: return t5.d_model;
    case LanguageModelKind::kNone: return 0;
  }
  return 0;
}

absl::StatusOr<Blip2Config> ParseBlip2Config(const std::string& json_text, const std::string& file) {
  ASSIGN_OR_RETURN(nlohmann::json j, ParseJson(json_text, file));
  JsonFields f(j, file);
  Blip2Config c;
  const std::string model_type = f.RequiredString("model_type");
  if (f.status().ok() && model_type != "blip-2") {
    f.Fail("model_type", absl::StrCat("expected \"blip-2\", got \"", model_type, "\""));
  }
  if (f.HasValue("architectures")) {
    const auto& arch = j["architectures"];
    if (!arch.is_array() || (!arch.empty() && !arch[0].is_string())) {
      f.Fail("architectures", "expected a list of strings");
    } else if (!arch.empty()) {
      c.architecture = arch[0].get<std::string>();
    }
  }
  c.vision = ReadVision(f.Object("vision_config"));
  c.qformer = ReadQFormer(f.Object("qformer_config"), c.vision.hidden_size);
  c.num_query_tokens = f.Int("num_query_tokens", c.num_query_tokens);
  RequirePositive(f, "num_query_tokens", c.num_query_tokens);
  c.image_text_hidden_size = f.Int("image_text_hidden_size", c.image_text_hidden_size);
  RequirePositive(f, "image_text_hidden_size", c.image_text_hidden_size);
  c.image_token_index = f.OptionalInt("image_token_index");

  JsonFields text = f.Object("text_config");
  // Blip2Config falls back to OPT when text_config names no model type.
  const std::string text_type = text.String("model_type", "opt");
  if (IsRetrievalArchitecture(c.architecture)) {
    c.language_model = LanguageModelKind::kNone;
  } else if (text_type == "opt") {
    c.language_model = LanguageModelKind::kOpt;
  } else if (text_type == "t5") {
    c.language_model = LanguageModelKind::kT5;
  } else {
    text.Fail("model_type", absl::StrCat("unsupported language model \"", text_type, "\" (supported: opt, t5)"));
  }
  if (text_type == "t5") {
    c.t5 = ReadT5(text);
  } else {
    c.opt = ReadOpt(text);
  }
  RETURN_IF_ERROR(f.status());
  return c;
}

GenerationConfig DefaultGenerationConfig(const Blip2Config& config) {
  GenerationConfig g;
  if (config.language_model == LanguageModelKind::kT5) {
    g.eos_token_id = config.t5.eos_token_id;
    g.pad_token_id = config.t5.pad_token_id;
    g.decoder_start_token_id = config.t5.decoder_start_token_id;
  } else {
    g.bos_token_id = config.opt.bos_token_id;
    g.eos_token_id = config.opt.eos_token_id;
    g.pad_token_id = config.opt.pad_token_id;
  }
  return g;
}

absl::StatusOr<GenerationConfig> ParseGenerationConfig(const std::string& json_text, const std::string& file) {
  ASSIGN_OR_RETURN(nlohmann::json j, ParseJson(json_text, file));
  JsonFields f(j, file);
  GenerationConfig g;
  g.bos_token_id = f.OptionalInt("bos_token_id");
  g.eos_token_id = f.IntOrIntList("eos_token_id", {});
  g.pad_token_id = f.OptionalInt("pad_token_id");
  g.decoder_start_token_id = f.OptionalInt("decoder_start_token_id");
  g.max_length = f.Int("max_length", g.max_length);
  g.max_new_tokens = f.OptionalInt("max_new_tokens");
  g.min_length = f.Int("min_length", g.min_length);
  g.min_new_tokens = f.OptionalInt("min_new_tokens");
  g.num_beams = f.Int("num_beams", g.num_beams);
  g.num_return_sequences = f.Int("num_return_sequences", g.num_return_sequences);
  g.repetition_penalty = f.Double("repetition_penalty", g.repetition_penalty);
  g.length_penalty = f.Double("length_penalty", g.length_penalty);
  if (f.HasValue("early_stopping") && j["early_stopping"].is_string()) {
    if (j["early_stopping"] != "never") f.Fail("early_stopping", "expected true, false or \"never\"");
    g.early_stopping_never = true;
  } else {
    g.early_stopping = f.Bool("early_stopping", g.early_stopping);
  }
  g.no_repeat_ngram_size = f.Int("no_repeat_ngram_size", g.no_repeat_ngram_size);
  g.do_sample = f.Bool("do_sample", g.do_sample);
  g.temperature = f.Double("temperature", g.temperature);
  g.top_k = f.Int("top_k", g.top_k);
  g.top_p = f.Double("top_p", g.top_p);
  RequirePositive(f, "num_beams", g.num_beams);
  RequirePositive(f, "num_return_sequences", g.num_return_sequences);
  if (g.repetition_penalty <= 0) f.Fail("repetition_penalty", "must be positive");
  RETURN_IF_ERROR(f.status());
  return g;
}

absl::StatusOr<ImageProcessorConfig> ParseImageProcessorConfig(const std::string& json_text,
                                                               const std::string& file) {
  ASSIGN_OR_RETURN(nlohmann::json j, ParseJson(json_text, file));
  JsonFields top(j, file);
  JsonFields f = j.contains("image_processor") ? top.Object("image_processor") : top;
  ImageProcessorConfig c;
  c.do_convert_rgb = f.Bool("do_convert_rgb", c.do_convert_rgb);
  c.do_resize = f.Bool("do_resize", c.do_resize);
  JsonFields size = f.Object("size");
  c.height = size.Int("height", c.height);
  c.width = size.Int("width", c.width);
  if (size.HasValue("shortest_edge") || size.HasValue("longest_edge")) {
    size.Fail("shortest_edge", "only {height, width} sizes are supported, as BlipImageProcessor uses");
  }
  c.resample = f.Int("resample", c.resample);
  if (c.resample != 3) f.Fail("resample", absl::StrCat("only 3 (bicubic) is supported, got ", c.resample));
  c.do_rescale = f.Bool("do_rescale", c.do_rescale);
  c.rescale_factor = f.Double("rescale_factor", c.rescale_factor);
  c.do_normalize = f.Bool("do_normalize", c.do_normalize);
  c.image_mean = f.DoubleList("image_mean", c.image_mean);
  c.image_std = f.DoubleList("image_std", c.image_std);
  RequirePositive(size, "height", c.height);
  RequirePositive(size, "width", c.width);
  if (c.image_mean.size() == 1) c.image_mean.assign(3, c.image_mean[0]);
  if (c.image_std.size() == 1) c.image_std.assign(3, c.image_std[0]);
  if (c.image_mean.size() != 3) f.Fail("image_mean", "expected 3 values (R, G, B)");
  if (c.image_std.size() != 3) f.Fail("image_std", "expected 3 values (R, G, B)");
  for (double s : c.image_std) {
    if (s == 0) f.Fail("image_std", "must not contain 0");
  }
  RETURN_IF_ERROR(f.status());
  return c;
}

absl::StatusOr<ModelSpec> LoadModelSpec(const std::string& model_dir) {
  ModelSpec spec;
  spec.model_dir = model_dir;
  const std::string config_path = common::JoinPath(model_dir, "config.json");
  ASSIGN_OR_RETURN(std::string config_text, common::ReadFile(config_path));
  ASSIGN_OR_RETURN(spec.config, ParseBlip2Config(config_text, config_path));

  const std::string gen_path = common::JoinPath(model_dir, "generation_config.json");
  if (common::FileExists(gen_path)) {
    ASSIGN_OR_RETURN(std::string text, common::ReadFile(gen_path));
    ASSIGN_OR_RETURN(spec.generation, ParseGenerationConfig(text, gen_path));
    // Special ids the file leaves out come from the language model's config, as
    // transformers' generate falls back to them.
    const GenerationConfig from_model = DefaultGenerationConfig(spec.config);
    if (spec.generation.eos_token_id.empty()) spec.generation.eos_token_id = from_model.eos_token_id;
    if (!spec.generation.bos_token_id) spec.generation.bos_token_id = from_model.bos_token_id;
    if (!spec.generation.pad_token_id) spec.generation.pad_token_id = from_model.pad_token_id;
    if (!spec.generation.decoder_start_token_id) {
      spec.generation.decoder_start_token_id = from_model.decoder_start_token_id;
    }
  } else {
    spec.generation = DefaultGenerationConfig(spec.config);
  }

  // The processor file (newer hub snapshots) carries the image settings and the
  // number of <image> placeholders; older snapshots have preprocessor_config.json.
  spec.processor_num_query_tokens = spec.config.num_query_tokens;
  const std::string processor_path = common::JoinPath(model_dir, "processor_config.json");
  const std::string preprocessor_path = common::JoinPath(model_dir, "preprocessor_config.json");
  std::string image_config_path = preprocessor_path;
  if (common::FileExists(processor_path)) {
    ASSIGN_OR_RETURN(std::string text, common::ReadFile(processor_path));
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    JsonFields f(j, processor_path);
    spec.processor_num_query_tokens = f.Int("num_query_tokens", spec.processor_num_query_tokens);
    RETURN_IF_ERROR(f.status());
    if (j.is_object() && j.contains("image_processor")) image_config_path = processor_path;
  }
  ASSIGN_OR_RETURN(std::string image_text, common::ReadFile(image_config_path));
  ASSIGN_OR_RETURN(spec.image_processor, ParseImageProcessorConfig(image_text, image_config_path));
  if (spec.image_processor.height != spec.config.vision.image_size ||
      spec.image_processor.width != spec.config.vision.image_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        image_config_path, ": size ", spec.image_processor.height, "x", spec.image_processor.width,
        " does not match vision_config.image_size ", spec.config.vision.image_size, " in config.json"));
  }
  return spec;
}

}  // namespace blip2::engine
