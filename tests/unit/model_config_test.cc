// Config parsing: the fixtures' files, transformers' defaults, and bad fields
// named by their path.
#include "engine/model/model_config.h"

#include "tests/catch.h"
#include "tests/test_support.h"

namespace blip2::engine {
namespace {

using testing::FixturesDir;

absl::Status ParseStatus(const std::string& json) { return ParseBlip2Config(json, "config.json").status(); }

bool Mentions(const absl::Status& s, const std::string& fragment) {
  return s.message().find(fragment) != std::string::npos;
}

TEST_CASE("config: every fixture model folder loads") {
  for (const char* name : {"blip2-tiny-opt", "blip2-tiny-flan-t5", "blip2-tiny-itm", "blip2-tiny-opt-eos"}) {
    auto spec = LoadModelSpec(FixturesDir() + "/" + name);
    INFO(name << ": " << spec.status().ToString());
    REQUIRE(spec.ok());
    CHECK(spec->image_processor.height == spec->config.vision.image_size);
  }
}

TEST_CASE("config: OPT fixture values and the forced Q-Former encoder width") {
  auto spec = LoadModelSpec(FixturesDir() + "/blip2-tiny-opt");
  REQUIRE(spec.ok());
  const Blip2Config& c = spec->config;
  CHECK(c.language_model == LanguageModelKind::kOpt);
  CHECK(c.vision.hidden_size == 32);
  CHECK(c.vision.sequence_length() == 257);
  CHECK(c.qformer.encoder_hidden_size == c.vision.hidden_size);
  CHECK(c.qformer.HasCrossAttention(0));
  CHECK_FALSE(c.qformer.HasCrossAttention(1));
  CHECK(c.image_token_index == 400);
  CHECK(c.language_hidden_size() == 32);
  CHECK(spec->generation.eos_token_id == std::vector<int64_t>{202});
  CHECK(spec->processor_num_query_tokens == 8);
  CHECK(spec->image_processor.rescale_factor == Approx(1.0 / 255.0));
}

TEST_CASE("config: T5 activation, head scaling, list of stop ids") {
  auto spec = LoadModelSpec(FixturesDir() + "/blip2-tiny-flan-t5-eos");
  REQUIRE(spec.ok());
  const T5Config& t5 = spec->config.t5;
  CHECK(spec->config.language_model == LanguageModelKind::kT5);
  CHECK(t5.dense_act_fn == Activation::kGeluTanh);
  CHECK(t5.is_gated_act);
  CHECK_FALSE(t5.scale_decoder_outputs);
  CHECK(spec->generation.eos_token_id.size() == 2);
}

TEST_CASE("config: retrieval checkpoint without a language model") {
  auto spec = LoadModelSpec(FixturesDir() + "/blip2-tiny-itm");
  REQUIRE(spec.ok());
  CHECK(spec->config.is_retrieval());
  CHECK_FALSE(spec->config.image_token_index.has_value());
  CHECK(spec->config.qformer.use_qformer_text_input);
  CHECK(spec->config.image_text_hidden_size == 16);
}

TEST_CASE("config: transformers' defaults fill absent fields") {
  auto c = ParseBlip2Config(R"({"model_type": "blip-2"})", "config.json");
  REQUIRE(c.ok());
  CHECK(c->vision.hidden_size == 1408);
  CHECK(c->vision.num_hidden_layers == 39);
  CHECK(c->vision.layer_norm_eps == 1e-6);
  CHECK(c->qformer.hidden_size == 768);
  CHECK(c->qformer.layer_norm_eps == 1e-12);
  CHECK(c->qformer.encoder_hidden_size == 1408);
  CHECK(c->num_query_tokens == 32);
  CHECK(c->language_model == LanguageModelKind::kOpt);
  CHECK(c->opt.word_embed_proj_dim == c->opt.hidden_size);
  const GenerationConfig g = DefaultGenerationConfig(*c);
  CHECK(g.eos_token_id == std::vector<int64_t>{2});
  CHECK(g.max_length == 20);
}

TEST_CASE("config: T5 derives the activation from feed_forward_proj unless dense_act_fn is given") {
  auto derived = ParseBlip2Config(
      R"({"model_type":"blip-2","text_config":{"model_type":"t5","feed_forward_proj":"gated-gelu"}})", "c");
  REQUIRE(derived.ok());
  CHECK(derived->t5.dense_act_fn == Activation::kGeluTanh);
  CHECK(derived->t5.num_decoder_layers == derived->t5.num_layers);
  auto explicit_gelu = ParseBlip2Config(
      R"({"model_type":"blip-2","text_config":{"model_type":"t5","feed_forward_proj":"gated-gelu","dense_act_fn":"gelu"}})",
      "c");
  REQUIRE(explicit_gelu.ok());
  CHECK(explicit_gelu->t5.dense_act_fn == Activation::kGeluErf);
  CHECK(explicit_gelu->t5.scale_decoder_outputs);  // falls back to tie_word_embeddings (true)
}

TEST_CASE("config: a missing required field is named") {
  const absl::Status s = ParseStatus(R"({"vision_config": {}})");
  CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  CHECK(Mentions(s, "config.json: model_type: required field is missing"));
}

TEST_CASE("config: a field of the wrong type is named with its path") {
  const absl::Status s = ParseStatus(R"({"model_type":"blip-2","vision_config":{"hidden_size":"32"}})");
  CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  CHECK(Mentions(s, "vision_config.hidden_size: expected an integer"));
  CHECK(Mentions(ParseStatus(R"({"model_type":"blip-2","qformer_config":[1]})"), "qformer_config: expected a JSON object"));
  CHECK(Mentions(ParseStatus(R"({"model_type":"blip-2","text_config":{"eos_token_id":"x"}})"), "text_config.eos_token_id"));
  CHECK(Mentions(ParseStatus(R"({"model_type":"blip-2","qformer_config":{"hidden_act":"mish"}})"),
                 "qformer_config.hidden_act: unsupported activation"));
  // Integral but beyond int64: refused, not converted (found by model_config_fuzz; UBSan).
  CHECK(Mentions(ParseStatus(R"({"model_type":"blip-2","vision_config":{"hidden_size":3.2e55}})"),
                 "vision_config.hidden_size: expected an integer"));
  CHECK(Mentions(ParseGenerationConfig(R"({"max_new_tokens":1e19})", "g.json").status(), "max_new_tokens"));
}

TEST_CASE("config: impossible sizes and unknown models are refused") {
  CHECK(Mentions(ParseStatus(R"({"model_type":"blip-2","vision_config":{"hidden_size":30,"num_attention_heads":4}})"),
                 "not divisible"));
  CHECK(Mentions(ParseStatus(R"({"model_type":"blip-2","num_query_tokens":0})"), "num_query_tokens: must be positive"));
  CHECK(Mentions(ParseStatus(R"({"model_type":"blip-2","text_config":{"model_type":"llama"}})"), "unsupported language model"));
  CHECK(Mentions(ParseStatus(R"({"model_type":"clip"})"), "expected \"blip-2\""));
  CHECK(Mentions(ParseStatus("{not json"), "not valid JSON"));
}

TEST_CASE("generation config: stop ids, early_stopping forms, bad types") {
  auto g = ParseGenerationConfig(R"({"eos_token_id":[4,1],"early_stopping":"never","num_beams":3})", "g.json");
  REQUIRE(g.ok());
  CHECK(g->eos_token_id == std::vector<int64_t>{4, 1});
  CHECK(g->early_stopping_never);
  CHECK(g->num_beams == 3);
  auto single = ParseGenerationConfig(R"({"eos_token_id":202,"early_stopping":true})", "g.json");
  REQUIRE(single.ok());
  CHECK(single->eos_token_id == std::vector<int64_t>{202});
  CHECK(single->early_stopping);
  CHECK(Mentions(ParseGenerationConfig(R"({"num_beams":"3"})", "g.json").status(), "g.json: num_beams"));
  CHECK(Mentions(ParseGenerationConfig(R"({"early_stopping":"sometimes"})", "g.json").status(), "early_stopping"));
}

TEST_CASE("image processor config: both file layouts and unsupported settings") {
  auto nested = ParseImageProcessorConfig(R"({"image_processor":{"size":{"height":364,"width":364}}})", "p.json");
  REQUIRE(nested.ok());
  CHECK(nested->height == 364);
  CHECK(nested->do_convert_rgb);
  auto flat = ParseImageProcessorConfig(R"({"size":{"height":224,"width":224},"image_mean":0.5})", "p.json");
  REQUIRE(flat.ok());
  CHECK(flat->image_mean == std::vector<double>{0.5, 0.5, 0.5});
  CHECK(Mentions(ParseImageProcessorConfig(R"({"resample":2})", "p.json").status(), "p.json: resample"));
  CHECK(Mentions(ParseImageProcessorConfig(R"({"image_std":[1,0,1]})", "p.json").status(), "must not contain 0"));
  CHECK(Mentions(ParseImageProcessorConfig(R"({"size":{"shortest_edge":224}})", "p.json").status(), "size.shortest_edge"));
}

TEST_CASE("model folder: missing config.json is NOT_FOUND and named") {
  const absl::Status s = LoadModelSpec(testing::MakeTempDir()).status();
  CHECK(s.code() == absl::StatusCode::kNotFound);
  CHECK(Mentions(s, "config.json"));
}

}  // namespace
}  // namespace blip2::engine
