// Retrieval results as API messages (the server's responses; `blip2 match`
// and `blip2 embed` build the same ones), and how the command-line tools print
// them, so the offline commands and the client print identical lines.
#pragma once

#include <string>
#include <vector>

#include "blip2.pb.h"
#include "engine/runtime/retrieval.h"

namespace blip2::server {

v1::MatchResponse MatchResponseFrom(const engine::RetrievalResult& result);
// `images`: one result per image (image_embeddings set); `texts`: the result
// holding every text, or null.
v1::EmbedResponse EmbedResponseFrom(const std::vector<engine::RetrievalResult>& images,
                                    const engine::RetrievalResult* texts);

// One line per text, best match first:
// "<match probability>\t<similarity>\t<text>" (6 decimals; "\t(truncated)" when cut).
void PrintMatch(const std::vector<std::string>& texts, const v1::MatchResponse& response);
// One line per image ("image <i>\t<rows>x<cols>\t<first values>") and text
// ("text <i>\t<size>\t<first values>").
void PrintEmbed(const v1::EmbedResponse& response);

}  // namespace blip2::server
