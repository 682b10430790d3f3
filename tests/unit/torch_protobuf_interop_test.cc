// LibTorch (inside the engine) and the system protobuf in one process: the link
// and the run-time behaviour the server binary depends on. This file sees
// protobuf headers and the engine's torch-free header only.
#include <cmath>

#include "engine/model/image_encoder.h"
#include "engine/tokenizer/unigram_tokenizer.h"
#include "server_config.pb.h"
#include "tests/catch.h"
#include "tests/test_support.h"

namespace blip2 {
namespace {

TEST_CASE("interop: protobuf round-trips a message and the engine runs a model in the same process") {
  config::ServerConfig sent;
  sent.set_model_dir(testing::FixturesDir() + "/blip2-tiny-opt");
  sent.set_device("cpu");
  sent.set_dtype("float32");
  sent.set_max_image_pixels(1234);
  std::string wire;
  REQUIRE(sent.SerializeToString(&wire));
  config::ServerConfig received;
  REQUIRE(received.ParseFromString(wire));
  CHECK(received.max_image_pixels() == 1234);
  CHECK(received.DebugString().find("blip2-tiny-opt") != std::string::npos);

  auto encoder = engine::ImageEncoder::Load({received.model_dir(), received.device(), received.dtype()});
  REQUIRE(encoder.ok());
  const auto shape = (*encoder)->pixel_shape();
  auto encoding = (*encoder)->Encode({std::vector<float>(shape[0] * shape[1] * shape[2], 0.5f)});
  REQUIRE(encoding.ok());
  CHECK(encoding->embeddings.shape.size() == 3);
  double norm = 0;
  for (float v : encoding->embeddings.values) norm += double(v) * v;
  CHECK(std::isfinite(norm));
  CHECK(norm > 0);

  // Protobuf still works after LibTorch has run (no symbol was interposed).
  config::ServerConfig again;
  REQUIRE(again.ParseFromString(wire));
  CHECK(again.SerializeAsString() == wire);
}

TEST_CASE("interop: the T5 tokenizer loads and encodes in a process that also runs protobuf 3.21") {
  // Our own unigram implementation, not libsentencepiece (which brings its own
  // protobuf and crashed beside gRPC's in a trial): nothing to clash with.
  config::ServerConfig cfg;
  cfg.set_model_dir(testing::FixturesDir() + "/blip2-tiny-flan-t5");
  auto tok = engine::UnigramTokenizer::Load(cfg.model_dir());
  REQUIRE(tok.ok());
  auto ids = (*tok)->Encode("Question: what animal is this? Answer:");
  REQUIRE(ids.ok());
  CHECK(ids->back() == 1);  // </s>
  CHECK(cfg.SerializeAsString().size() > 0);
}

}  // namespace
}  // namespace blip2
