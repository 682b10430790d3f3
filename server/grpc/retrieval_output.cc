#include "server/grpc/retrieval_output.h"

#include <algorithm>
#include <cstdio>
#include <numeric>

#include "absl/strings/str_format.h"

namespace blip2::server {
namespace {

void SetMatrix(const engine::FloatMatrix& m, v1::Matrix* out) {
  out->set_rows(static_cast<int32_t>(m.rows));
  out->set_cols(static_cast<int32_t>(m.cols));
  out->mutable_values()->Assign(m.values.begin(), m.values.end());
}

template <typename Values>
std::string Head(const Values& values) {  // the first few values, for a glance
  std::string out;
  for (int i = 0; i < std::min<int>(4, values.size()); ++i) absl::StrAppendFormat(&out, "%s%.6f", i ? " " : "", values[i]);
  return out;
}

}  // namespace

v1::MatchResponse MatchResponseFrom(const engine::RetrievalResult& result) {
  v1::MatchResponse response;
  int64_t tokens = 0;
  for (size_t i = 0; i < result.texts.size(); ++i) {
    const engine::TextRetrieval& t = result.texts[i];
    v1::TextMatch* m = response.add_matches();
    m->set_index(static_cast<int32_t>(i));
    m->set_match_probability(static_cast<float>(t.match_probability));
    m->set_similarity(static_cast<float>(t.similarity));
    m->set_truncated(t.truncated);
    tokens += t.tokens;
  }
  response.mutable_usage()->set_prompt_tokens(tokens);
  return response;
}

v1::EmbedResponse EmbedResponseFrom(const std::vector<engine::RetrievalResult>& images,
                                    const engine::RetrievalResult* texts) {
  v1::EmbedResponse response;
  for (const engine::RetrievalResult& r : images) {
    v1::ImageEmbedding* e = response.add_images();
    SetMatrix(r.image_embeddings, e->mutable_embeddings());
    if (r.image_features.rows > 0) SetMatrix(r.image_features, e->mutable_features());
  }
  if (texts != nullptr) {
    for (const engine::TextRetrieval& t : texts->texts) {
      v1::TextEmbedding* e = response.add_texts();
      e->mutable_embedding()->Assign(t.embedding.begin(), t.embedding.end());
      e->set_truncated(t.truncated);
      e->set_tokens(static_cast<int32_t>(t.tokens));
      if (t.features.rows > 0) SetMatrix(t.features, e->mutable_features());
    }
  }
  return response;
}

void PrintMatch(const std::vector<std::string>& texts, const v1::MatchResponse& response) {
  std::vector<int> order(response.matches_size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return response.matches(a).match_probability() > response.matches(b).match_probability();
  });
  for (int i : order) {
    const v1::TextMatch& m = response.matches(i);
    std::printf("%.6f\t%.6f\t%s%s\n", m.match_probability(), m.similarity(), texts[m.index()].c_str(),
                m.truncated() ? "\t(truncated)" : "");
  }
}

void PrintEmbed(const v1::EmbedResponse& response) {
  for (int i = 0; i < response.images_size(); ++i) {
    const v1::Matrix& e = response.images(i).embeddings();
    std::printf("image %d\t%dx%d\t%s\n", i, e.rows(), e.cols(), Head(e.values()).c_str());
  }
  for (int i = 0; i < response.texts_size(); ++i) {
    const v1::TextEmbedding& t = response.texts(i);
    std::printf("text %d\t%d\t%s%s\n", i, t.embedding_size(), Head(t.embedding()).c_str(),
                t.truncated() ? "\t(truncated)" : "");
  }
}

}  // namespace blip2::server
