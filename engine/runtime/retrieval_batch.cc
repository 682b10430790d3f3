#include "engine/runtime/retrieval_batch.h"

#include <algorithm>

namespace blip2::engine {
namespace {

// Texts right-padded into [N, L] ids and a 1/0 mask, on `device`.
std::pair<at::Tensor, at::Tensor> PadTexts(const std::vector<const std::vector<int64_t>*>& texts, int64_t pad_id,
                                           at::Device device) {
  size_t longest = 0;
  for (const auto* t : texts) longest = std::max(longest, t->size());
  const int64_t n = static_cast<int64_t>(texts.size()), len = static_cast<int64_t>(longest);
  std::vector<int64_t> ids(n * len, pad_id), mask(n * len, 0);
  for (int64_t i = 0; i < n; ++i) {
    std::copy(texts[i]->begin(), texts[i]->end(), ids.begin() + i * len);
    std::fill_n(mask.begin() + i * len, texts[i]->size(), 1);
  }
  return {at::tensor(ids, at::kLong).view({n, len}).to(device), at::tensor(mask, at::kLong).view({n, len}).to(device)};
}

FloatMatrix ToMatrix(const at::Tensor& t) {  // a 2-D tensor, any dtype and device
  const at::Tensor c = t.to(at::kCPU, at::kFloat).contiguous();
  FloatMatrix m;
  m.rows = c.size(0);
  m.cols = c.size(1);
  m.values.assign(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  return m;
}

}  // namespace

std::vector<RetrievalResult> RunRetrieval(const Blip2Model& model, const std::vector<RetrievalJob>& jobs,
                                          int64_t pad_id) {
  const RetrievalHeads& heads = *model.retrieval;
  const QFormer& qformer = model.image_path->qformer();
  std::vector<RetrievalResult> results(jobs.size());
  // 1. Every text of every job: one Q-Former pass, ITC embeddings of row 0.
  std::vector<const std::vector<int64_t>*> all_texts;
  for (const RetrievalJob& job : jobs) {
    for (const auto& ids : job.text_ids) all_texts.push_back(&ids);
  }
  at::Tensor hidden, embeds;
  if (!all_texts.empty()) {
    const auto [ids, mask] = PadTexts(all_texts, pad_id, model.device);
    hidden = heads.TextHidden(qformer, ids, mask);
    embeds = heads.TextEmbeds(hidden).select(1, 0).to(at::kFloat);  // [N, E]
  }
  const at::Tensor host_embeds = embeds.defined() ? embeds.to(at::kCPU).contiguous() : at::Tensor();
  int64_t row = 0;
  for (size_t j = 0; j < jobs.size(); ++j) {
    const RetrievalJob& job = jobs[j];
    RetrievalResult& r = results[j];
    const int64_t first = row, count = static_cast<int64_t>(job.text_ids.size());
    for (int64_t t = 0; t < count; ++t, ++row) {
      TextRetrieval text;
      const float* e = host_embeds.data_ptr<float>() + row * host_embeds.size(1);
      text.embedding.assign(e, e + host_embeds.size(1));
      text.tokens = static_cast<int64_t>(job.text_ids[t].size());
      text.truncated = job.truncated[t];
      if (job.features) text.features = ToMatrix(hidden[row].narrow(0, 0, text.tokens));
      r.texts.push_back(std::move(text));
    }
    if (job.image.image_embeds.defined()) {
      r.image_embeddings = ToMatrix(job.image.image_embeds);
      if (job.features) r.image_features = ToMatrix(job.image.qformer);
    }
    // 2. Matching: ITC against the image's queries, ITM for each (image, text) pair.
    if (job.match && count > 0) {
      const at::Tensor similarity =
          RetrievalHeads::Similarity(job.image.image_embeds.unsqueeze(0), embeds.narrow(0, first, count))[0];
      std::vector<const std::vector<int64_t>*> texts;
      for (const auto& ids : job.text_ids) texts.push_back(&ids);
      const auto [ids, mask] = PadTexts(texts, pad_id, model.device);
      const at::Tensor image = job.image.vision_hidden.unsqueeze(0).expand({count, -1, -1});
      const at::Tensor logits =
          heads.MatchLogits(heads.MatchHidden(qformer, image, ids, mask), qformer.num_queries());
      const at::Tensor probability = logits.softmax(-1).select(1, 1).to(at::kCPU).contiguous();
      const at::Tensor sim = similarity.to(at::kCPU).contiguous();
      for (int64_t t = 0; t < count; ++t) {
        r.texts[t].match_probability = probability.data_ptr<float>()[t];
        r.texts[t].similarity = sim.data_ptr<float>()[t];
      }
    }
  }
  return results;
}

}  // namespace blip2::engine
