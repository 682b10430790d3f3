// Retrieval parity with transformers, data-driven over every fixture model:
//  - retrieval checkpoints (reference.json "texts", "images"): the texts
//    tokenized by our WordPiece and padded as transformers pads them, then
//    every tensor of itm.* (the Q-Former over [queries; text] with the image,
//    the ITM logits), itc.* (the text pass, the text and image embeddings, the
//    similarities) and text_with_projection.*;
//  - generation checkpoints with blip2model.* tensors: Blip2Model's
//    get_image_features, get_qformer_features and get_text_features.
#include <c10/core/InferenceMode.h>

#include <cmath>

#include "absl/strings/str_split.h"
#include "engine/model/blip2_model.h"
#include "engine/runtime/engine.h"
#include "engine/runtime/retrieval_sink.h"
#include "engine/tokenizer/wordpiece_tokenizer.h"
#include "tests/catch.h"
#include "tests/parity/fixture_set.h"
#include "tests/parity/parity_checks.h"
#include "tests/parity/tensor_helpers.h"
#include "tests/test_support.h"

namespace blip2::testing {
namespace {

// The fixture's texts as transformers' processor batches them: our ids,
// right-padded to the longest, and the 1/0 mask.
std::pair<at::Tensor, at::Tensor> TextBatch(const engine::WordPieceTokenizer& tok,
                                            const std::vector<std::string>& texts, at::Device device) {
  std::vector<std::vector<int64_t>> rows;
  size_t longest = 0;
  for (const std::string& text : texts) {
    rows.push_back(tok.Encode(text, 512).ids);
    longest = std::max(longest, rows.back().size());
  }
  at::Tensor ids = at::full({static_cast<int64_t>(rows.size()), static_cast<int64_t>(longest)}, tok.pad_id(), at::kLong);
  at::Tensor mask = at::zeros_like(ids);
  for (size_t i = 0; i < rows.size(); ++i) {
    for (size_t t = 0; t < rows[i].size(); ++t) {
      ids[i][t] = rows[i][t];
      mask[i][t] = 1;
    }
  }
  return {ids.to(device), mask.to(device)};
}

TEST_CASE("parity: ITM, ITC and the text and vision models with projection match transformers") {
  const std::vector<FixtureModel> models = DiscoverModels(FixturesDir());
  int checked = 0;
  for (const FixtureModel& fm : models) {
    if (!fm.reference.contains("texts") || !fm.HasTensor("itm.logits_per_image")) continue;
    auto model = engine::Blip2Model::Load({fm.dir, TestDevice(), "float32"}, /*with_language_model=*/false);
    INFO(fm.name << ": " << model.status().ToString());
    REQUIRE(model.ok());
    const engine::Blip2Model& m = **model;
    REQUIRE(m.retrieval);
    auto tok = engine::WordPieceTokenizer::Load(fm.dir);
    REQUIRE(tok.ok());
    c10::InferenceMode guard;
    std::vector<std::vector<float>> pixels;
    for (const auto& image : fm.reference["images"]) pixels.push_back(ReferencePixels(models, image.get<std::string>(), fm.dir));
    const auto [ids, mask] = TextBatch(**tok, fm.reference["texts"].get<std::vector<std::string>>(), m.device);
    // The same padded batch as transformers' processor.
    const auto id_rows = fm.reference["input_ids"].get<std::vector<std::vector<int64_t>>>();
    const auto mask_rows = fm.reference["attention_mask"].get<std::vector<std::vector<int64_t>>>();
    for (size_t i = 0; i < id_rows.size(); ++i) {
      const at::Tensor row_ids = ids[static_cast<int64_t>(i)].cpu(), row_mask = mask[static_cast<int64_t>(i)].cpu();
      CHECK(std::vector<int64_t>(row_ids.data_ptr<int64_t>(), row_ids.data_ptr<int64_t>() + row_ids.numel()) ==
            id_rows[i]);
      CHECK(std::vector<int64_t>(row_mask.data_ptr<int64_t>(), row_mask.data_ptr<int64_t>() + row_mask.numel()) ==
            mask_rows[i]);
    }
    const engine::ImagePathOutput image = m.image_path->Forward(m.PixelBatch(pixels));
    const engine::QFormer& qformer = m.image_path->qformer();
    const engine::RetrievalHeads& heads = *m.retrieval;

    // ITM: image i with text i.
    const at::Tensor match = heads.MatchHidden(qformer, image.vision.last_hidden_state, ids, mask);
    CheckTensor(fm, "itm.text_embeds", ToHost(match));
    CheckTensor(fm, "itm.text_model_output.last_hidden_state", ToHost(match));
    CheckTensor(fm, "itm.text_model_output.pooler_output", ToHost(match.select(1, 0)));
    const at::Tensor itm = heads.MatchLogits(match, qformer.num_queries());
    CheckTensor(fm, "itm.logits_per_image", ToHost(itm));
    CheckTensor(fm, "itm.logits_per_text", ToHost(itm.t()));
    CheckTensor(fm, "itm.image_embeds", ToHost(image.vision.last_hidden_state));

    // ITC and the text model with projection: every image against every text.
    const at::Tensor text_hidden = heads.TextHidden(qformer, ids, mask);
    const at::Tensor text_embeds = heads.TextEmbeds(text_hidden);
    CheckTensor(fm, "itc.text_model_output.last_hidden_state", ToHost(text_hidden));
    CheckTensor(fm, "itc.text_model_output.pooler_output", ToHost(text_hidden.select(1, 0)));
    CheckTensor(fm, "itc.text_embeds", ToHost(text_embeds.select(1, 0)));
    const at::Tensor similarity = engine::RetrievalHeads::Similarity(image.image_embeds, text_embeds.select(1, 0));
    CheckTensor(fm, "itc.logits_per_image", ToHost(similarity));
    CheckTensor(fm, "itc.logits_per_text", ToHost(similarity.t()));
    CheckTensor(fm, "text_with_projection.last_hidden_state", ToHost(text_hidden));
    CheckTensor(fm, "text_with_projection.text_embeds", ToHost(text_embeds));
    ++checked;
  }
  CHECK(checked > 0);
}

// Through the engine's public face (what Match serves): image i against every
// text gives transformers' ITC similarities of row i and, for text i, the
// softmax of its ITM logits; the embeddings are ITC's.
TEST_CASE("parity: retrieval through the engine gives transformers' ITC similarities and ITM probabilities") {
  const std::vector<FixtureModel> models = DiscoverModels(FixturesDir());
  int checked = 0;
  for (const FixtureModel& fm : models) {
    if (!fm.reference.contains("texts") || !fm.HasTensor("itm.logits_per_image")) continue;
    auto engine = engine::Engine::Start({fm.dir, TestDevice(), "float32"});
    REQUIRE(engine.ok());
    const auto texts = fm.reference["texts"].get<std::vector<std::string>>();
    const auto images = fm.reference["images"].get<std::vector<std::string>>();
    const std::vector<float> itc = fm.Values("itc.logits_per_image"), itm = fm.Values("itm.logits_per_image");
    const std::vector<float> text_embeds = fm.Values("itc.text_embeds"), image_embeds = fm.Values("itc.image_embeds");
    const int64_t dim = fm.Shape("itc.text_embeds")[1];
    const int64_t per_image = image_embeds.size() / images.size();
    for (size_t i = 0; i < images.size(); ++i) {
      auto sink = std::make_shared<engine::RetrievalWaiter>();
      engine::RetrievalRequest request{ReferencePixels(models, images[i], fm.dir), std::nullopt, texts, true, false};
      REQUIRE((*engine)->SubmitRetrieval(std::move(request), sink).ok());
      auto result = sink->Wait();
      REQUIRE(result.ok());
      INFO(fm.name << " image " << images[i]);
      for (size_t t = 0; t < texts.size(); ++t) {
        CHECK(result->texts[t].similarity == Approx(itc[i * texts.size() + t]).margin(1e-5));
        for (int64_t d = 0; d < dim; ++d) CHECK(result->texts[t].embedding[d] == Approx(text_embeds[t * dim + d]).margin(1e-5));
      }
      const double match = 1.0 / (1.0 + std::exp(itm[2 * i] - itm[2 * i + 1]));  // softmax of [no, yes]
      CHECK(result->texts[i].match_probability == Approx(match).margin(1e-5));
      for (int64_t k = 0; k < per_image; ++k) {
        CHECK(result->image_embeddings.values[k] == Approx(image_embeds[i * per_image + k]).margin(1e-5));
      }
      ++checked;
    }
    std::printf("PARITY %-22s Match through the engine: %zu images x %zu texts\n", fm.name.c_str(), images.size(),
                texts.size());
  }
  CHECK(checked > 0);
}

// The images a fixture's "<a>+<b>.vision.last_hidden_state" key was made from.
std::vector<std::string> ImagePathImages(const FixtureModel& fm) {
  for (const std::string& key : fm.Keys()) {
    const std::string suffix = ".vision.last_hidden_state";
    if (key.size() > suffix.size() && key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0) {
      return absl::StrSplit(key.substr(0, key.size() - suffix.size()), '+');
    }
  }
  return {};
}

TEST_CASE("parity: Blip2Model's image, Q-Former and text features match transformers") {
  const std::vector<FixtureModel> models = DiscoverModels(FixturesDir());
  int checked = 0;
  for (const FixtureModel& fm : models) {
    if (!fm.HasTensor("blip2model.get_qformer_features") || !fm.reference.contains("get_text_features_input_ids")) {
      continue;
    }
    auto model = engine::Blip2Model::Load({fm.dir, TestDevice(), "float32"}, /*with_language_model=*/true);
    INFO(fm.name << ": " << model.status().ToString());
    REQUIRE(model.ok());
    const engine::Blip2Model& m = **model;
    c10::InferenceMode guard;
    std::vector<std::vector<float>> pixels;
    for (const std::string& image : ImagePathImages(fm)) pixels.push_back(ReferencePixels(models, image, fm.dir));
    REQUIRE_FALSE(pixels.empty());
    const engine::ImagePathOutput image = m.image_path->Forward(m.PixelBatch(pixels));
    CheckTensor(fm, "blip2model.get_image_features.last_hidden_state", ToHost(image.vision.last_hidden_state));
    CheckTensor(fm, "blip2model.get_image_features.pooler_output", ToHost(image.vision.pooler_output));
    CheckTensor(fm, "blip2model.get_qformer_features", ToHost(image.qformer));
    if (m.opt) {
      // get_text_features: the language model alone on text, its last hidden state.
      const auto texts = fm.reference["get_text_features_input_ids"].get<std::vector<std::vector<int64_t>>>();
      std::vector<at::Tensor> rows;
      for (const auto& ids : texts) {
        engine::KvCache cache = m.opt->MakeSlotCache(1, static_cast<int64_t>(ids.size()));
        engine::DecoderInput in;
        in.blocks = cache.SlotBlocks(0);
        in.token_ids = ids;
        in.all_logits = true;
        rows.push_back(m.opt->HiddenStates({in}, cache));
      }
      CheckTensor(fm, "blip2model.get_text_features.last_hidden_state", ToHost(at::stack(rows)));
    }
    ++checked;
  }
  CHECK(checked > 0);
}

}  // namespace
}  // namespace blip2::testing
