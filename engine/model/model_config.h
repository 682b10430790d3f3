// Typed views of a Hugging Face BLIP-2 folder's JSON files (config.json,
// generation_config.json, preprocessor_config.json / processor_config.json),
// with the defaults transformers applies when a field is absent. Parsed and
// validated once when a model is loaded; immutable afterwards.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace blip2::engine {

// Activation functions named by `hidden_act` / `activation_function` / `dense_act_fn`.
enum class Activation { kGeluErf, kGeluTanh, kRelu, kSilu, kQuickGelu };

absl::StatusOr<Activation> ParseActivation(const std::string& name);

// Blip2VisionConfig: the EVA ViT-g image encoder.
struct VisionConfig {
  int64_t hidden_size = 1408;
  int64_t intermediate_size = 6144;
  int64_t num_hidden_layers = 39;
  int64_t num_attention_heads = 16;
  int64_t num_channels = 3;
  int64_t image_size = 224;
  int64_t patch_size = 14;
  double layer_norm_eps = 1e-6;
  bool qkv_bias = true;
  Activation hidden_act = Activation::kGeluErf;

  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  int64_t grid_size() const { return image_size / patch_size; }
  // Patches plus the class token: 257 for 224 px and patch 14.
  int64_t sequence_length() const { return grid_size() * grid_size() + 1; }
};

// Blip2QFormerConfig: BERT with cross-attention to the image every
// `cross_attention_frequency` layers.
struct QFormerConfig {
  int64_t vocab_size = 30522;
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t intermediate_size = 3072;
  int64_t max_position_embeddings = 512;
  int64_t cross_attention_frequency = 2;
  // Forced to the vision hidden size, as Blip2Config does.
  int64_t encoder_hidden_size = 1408;
  int64_t pad_token_id = 0;
  double layer_norm_eps = 1e-12;
  Activation hidden_act = Activation::kGeluErf;
  bool use_qformer_text_input = false;

  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  bool HasCrossAttention(int64_t layer) const { return layer % cross_attention_frequency == 0; }
};

// OPTConfig (decoder-only language model).
struct OptConfig {
  int64_t vocab_size = 50272;
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t ffn_dim = 3072;
  int64_t num_attention_heads = 12;
  int64_t max_position_embeddings = 2048;
  int64_t word_embed_proj_dim = 768;  // defaults to hidden_size
  bool do_layer_norm_before = true;
  bool enable_bias = true;
  bool layer_norm_elementwise_affine = true;
  bool remove_final_layer_norm = false;
  bool tie_word_embeddings = true;
  Activation activation_function = Activation::kRelu;
  int64_t pad_token_id = 1;
  int64_t bos_token_id = 2;
  std::vector<int64_t> eos_token_id = {2};
};

// T5Config (encoder-decoder language model, Flan-T5 style).
struct T5Config {
  int64_t vocab_size = 32128;
  int64_t d_model = 512;
  int64_t d_kv = 64;
  int64_t d_ff = 2048;
  int64_t num_layers = 6;
  int64_t num_decoder_layers = 6;  // defaults to num_layers
  int64_t num_heads = 8;
  int64_t relative_attention_num_buckets = 32;
  int64_t relative_attention_max_distance = 128;
  double layer_norm_epsilon = 1e-6;
  std::string feed_forward_proj = "relu";
  bool is_gated_act = false;
  Activation dense_act_fn = Activation::kRelu;
  bool tie_word_embeddings = true;
  // Multiply the decoder output by d_model^-0.5 before the head; the field when
  // present, else `tie_word_embeddings` (older configs).
  bool scale_decoder_outputs = true;
  int64_t decoder_start_token_id = 0;
  int64_t pad_token_id = 0;
  std::vector<int64_t> eos_token_id = {1};
};

enum class LanguageModelKind { kNone, kOpt, kT5 };

struct Blip2Config {
  // architectures[0]; "Blip2ForConditionalGeneration" when absent.
  std::string architecture = "Blip2ForConditionalGeneration";
  VisionConfig vision;
  QFormerConfig qformer;
  // kNone for retrieval checkpoints, which carry no language model weights.
  LanguageModelKind language_model = LanguageModelKind::kOpt;
  OptConfig opt;
  T5Config t5;
  int64_t num_query_tokens = 32;
  int64_t image_text_hidden_size = 256;
  std::optional<int64_t> image_token_index;

  bool is_retrieval() const { return language_model == LanguageModelKind::kNone; }
  // Width of the language model's embeddings (language_projection's output).
  int64_t language_hidden_size() const;
};

// generation_config.json (or, when absent, what transformers derives from the
// language model config). Only the fields BLIP-2 serving uses.
struct GenerationConfig {
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_id;
  std::optional<int64_t> pad_token_id;
  std::optional<int64_t> decoder_start_token_id;
  int64_t max_length = 20;
  std::optional<int64_t> max_new_tokens;
  int64_t min_length = 0;
  std::optional<int64_t> min_new_tokens;
  int64_t num_beams = 1;
  int64_t num_return_sequences = 1;
  double repetition_penalty = 1.0;
  double length_penalty = 1.0;
  // "never" is kept as a separate flag; `early_stopping` is then false.
  bool early_stopping = false;
  bool early_stopping_never = false;
  int64_t no_repeat_ngram_size = 0;
  bool do_sample = false;
  double temperature = 1.0;
  int64_t top_k = 50;
  double top_p = 1.0;
};

// BlipImageProcessor settings.
struct ImageProcessorConfig {
  bool do_convert_rgb = true;
  bool do_resize = true;
  int64_t height = 384;
  int64_t width = 384;
  int64_t resample = 3;  // PIL BICUBIC; the only filter BLIP-2 checkpoints use
  bool do_rescale = true;
  double rescale_factor = 1.0 / 255.0;
  bool do_normalize = true;
  std::vector<double> image_mean = {0.48145466, 0.4578275, 0.40821073};
  std::vector<double> image_std = {0.26862954, 0.26130258, 0.27577711};
};

// Everything read from a model folder's JSON files.
struct ModelSpec {
  std::string model_dir;
  Blip2Config config;
  GenerationConfig generation;
  ImageProcessorConfig image_processor;
  // processor_config.json's num_query_tokens (placeholders per image), else the config's.
  int64_t processor_num_query_tokens = 32;
};

// Parses from JSON text; `file` names the source in error messages.
absl::StatusOr<Blip2Config> ParseBlip2Config(const std::string& json_text, const std::string& file);
absl::StatusOr<GenerationConfig> ParseGenerationConfig(const std::string& json_text, const std::string& file);
// Accepts preprocessor_config.json, or processor_config.json with an "image_processor" object.
absl::StatusOr<ImageProcessorConfig> ParseImageProcessorConfig(const std::string& json_text,
                                                               const std::string& file);
// What transformers derives when generation_config.json is absent.
GenerationConfig DefaultGenerationConfig(const Blip2Config& config);

// Reads and validates the JSON files of a model folder.
absl::StatusOr<ModelSpec> LoadModelSpec(const std::string& model_dir);

}  // namespace blip2::engine
