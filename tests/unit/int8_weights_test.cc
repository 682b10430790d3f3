// int8 weights (quantization "int8"): the quantizer, every path of the int8
// product against the same arithmetic in float64, what is refused and why,
// and that loading leaves no checkpoint bytes resident.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <cstring>
#include <fstream>

#include "engine/model/blip2_model.h"
#include "engine/model/image_encoder.h"
#include "engine/model/weights.h"
#include "tests/catch.h"
#include "tests/test_support.h"

namespace blip2::engine {
namespace {

using testing::FixturesDir;

// The product int8 weights stand for: x @ (q * s)^T, in float64.
at::Tensor Expected(const at::Tensor& x, const Linear& l) {
  const at::Tensor w = l.qweight.to(at::kDouble) * l.scales.to(at::kDouble).unsqueeze(1);
  at::Tensor y = at::matmul(x.to(at::kDouble), w.t());
  return l.bias.defined() ? y + l.bias.to(at::kDouble) : y;
}

Linear RandomInt8Linear(int64_t in, int64_t out, at::ScalarType dtype, bool bias) {
  at::manual_seed(7);
  const at::Tensor w = at::randn({out, in});
  Linear l;
  QuantizeInt8(w, dtype, &l.qweight, &l.scales);
  if (bias) l.bias = at::randn({out}).to(dtype);
  return l;
}

TEST_CASE("int8: per-channel quantization rounds each row against its own scale") {
  at::Tensor w = at::randn({6, 40});
  w[2].zero_();        // a row of zeros stays zero
  w[4].mul_(1e-30);    // a scale that underflows bfloat16's range is no NaN
  at::Tensor q, s;
  QuantizeInt8(w, at::kBFloat16, &q, &s);
  CHECK(q.scalar_type() == at::kChar);
  CHECK(s.scalar_type() == at::kBFloat16);
  CHECK(q.abs().max().item<int>() <= 127);
  CHECK(q[2].abs().sum().item<int>() == 0);
  CHECK_FALSE(at::isnan(q.to(at::kFloat)).any().item<bool>());
  // Every value lies within half a step of its row's (rounded) scale.
  const at::Tensor scale = s.to(at::kFloat).unsqueeze(1);
  const at::Tensor error = (q.to(at::kFloat) * scale - w).abs();
  for (int64_t r : {0, 1, 3, 5}) CHECK((error[r] <= scale[r] * 0.5001).all().item<bool>());
}

TEST_CASE("int8: the product matches float64 for decode-sized and prefill-sized inputs, in every dtype") {
  c10::InferenceMode guard;
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    // k = 77 leaves a tail after the vector loop; 3 and 13 rows mix tile sizes.
    for (int64_t rows : {1, 2, 3, 8, 13, 16, 17, 40, 64, 65, 100}) {
      const Linear l = RandomInt8Linear(77, 50, dtype, /*bias=*/rows % 2 == 1);
      const at::Tensor x = at::randn({rows, 77}).to(dtype);
      const at::Tensor y = l(x);
      INFO(c10::toString(dtype) << " rows " << rows);
      CHECK(y.scalar_type() == dtype);
      REQUIRE(y.sizes() == at::IntArrayRef({rows, 50}));
      const at::Tensor expected = Expected(x, l);
      // float32 sums of 77 products, then one rounding to the output dtype.
      const double tolerance = dtype == at::kFloat ? 1e-4 : dtype == at::kHalf ? 1e-2 : 6e-2;
      CHECK(((y.to(at::kDouble) - expected).abs() / (expected.abs() + 1)).max().item<double>() < tolerance);
    }
  }
  // Leading dimensions are kept: [B, T, in] -> [B, T, out].
  const Linear l = RandomInt8Linear(32, 24, at::kFloat, true);
  const at::Tensor x = at::randn({2, 3, 32});
  CHECK(l(x).sizes() == at::IntArrayRef({2, 3, 24}));
  CHECK(at::allclose(l(x).reshape({6, 24}), l(x.reshape({6, 32})), 1e-5, 1e-5));
}

TEST_CASE("int8: the result of a row does not depend on the thread count") {
  c10::InferenceMode guard;
  const Linear l = RandomInt8Linear(300, 2000, at::kFloat, false);
  const at::Tensor x = at::randn({4, 300});
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const at::Tensor one = l(x);
  at::set_num_threads(std::max(2, threads));
  const at::Tensor many = l(x);
  at::set_num_threads(threads);
  CHECK(at::equal(one, many));
}

TEST_CASE("int8: quantization names are checked, and a retrieval checkpoint is refused") {
  CHECK(ParseQuantization("").value() == LinearWeights::kDense);
  CHECK(ParseQuantization("none").value() == LinearWeights::kDense);
  CHECK(ParseQuantization("int8").value() == LinearWeights::kInt8);
  const auto bad = ParseQuantization("int4");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().message().find("unknown quantization \"int4\"") != std::string::npos);
  const auto itm = Blip2Model::Load({FixturesDir() + "/blip2-tiny-itm", "cpu", "float32", "int8"}, false);
  REQUIRE_FALSE(itm.ok());
  CHECK(itm.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(itm.status().message().find("retrieval checkpoint") != std::string::npos);
  CHECK(CheckInt8Supported(at::kCPU, at::kBFloat16).ok());
}

TEST_CASE("int8: an OPT and a T5 model keep their language model's linear weights as int8") {
  for (const char* name : {"blip2-tiny-opt", "blip2-tiny-flan-t5"}) {
    INFO(name);
    const auto model = Blip2Model::Load({FixturesDir() + "/" + name, "cpu", "bfloat16", "int8"}, true);
    REQUIRE(model.ok());
    CHECK((*model)->checkpoint == nullptr);  // nothing of the file is kept
    const auto dense = Blip2Model::Load({FixturesDir() + "/" + name, "cpu", "bfloat16"}, true);
    REQUIRE(dense.ok());
    // Same vision tower either way: the image path is not quantized.
    c10::InferenceMode guard;
    const at::Tensor pixels = at::rand({1, 3, (*model)->spec.config.vision.image_size,
                                        (*model)->spec.config.vision.image_size});
    CHECK(at::equal((*model)->image_path->Forward(pixels).projected, (*dense)->image_path->Forward(pixels).projected));
  }
}

// The file-backed part of the resident set (RssFile in /proc/self/status), bytes.
int64_t ResidentFileBytes() {
  std::ifstream status("/proc/self/status");
  std::string key;
  int64_t kb = 0;
  while (status >> key) {
    if (key == "RssFile:") {
      status >> kb;
      return kb * 1024;
    }
  }
  return -1;
}

TEST_CASE("loading: the checkpoint's pages are released as each tensor is copied") {
  // The demo model's file is 2.7 MB; the tiny fixtures are smaller than the
  // noise of other file pages (libraries), so measure the largest bundled one.
  const std::string model = FixturesDir() + "/blip2-shapes-opt";
  const auto checkpoint = Checkpoint::Open(model);
  REQUIRE(checkpoint.ok());
  int64_t file_bytes = 0;
  for (const std::string& name : (*checkpoint)->Names()) file_bytes += (*checkpoint)->Get(name)->nbytes;
  const TensorView first = *(*checkpoint)->Get((*checkpoint)->Names().front());
  const std::string first_bytes(reinterpret_cast<const char*>(first.data), first.nbytes);
  // Touch every page through the mapping, as a loader that kept it would.
  const int64_t before_touch = ResidentFileBytes();
  int64_t sum = 0;
  for (const std::string& name : (*checkpoint)->Names()) {
    const TensorView v = *(*checkpoint)->Get(name);
    for (size_t i = 0; i < v.nbytes; i += 512) sum += static_cast<int>(v.data[i]);
  }
  const int64_t touched = ResidentFileBytes() - before_touch;
  INFO("checkpoint " << file_bytes << " bytes; touching it added " << touched << " resident file bytes");
  CHECK(touched > file_bytes / 2);
  // Released tensor by tensor, as WeightLoader::Get does after each copy.
  for (const std::string& name : (*checkpoint)->Names()) (*checkpoint)->Release(*(*checkpoint)->Get(name));
  const int64_t after_release = ResidentFileBytes() - before_touch;
  INFO("after release: " << after_release << " (checksum " << sum << ")");
  CHECK(after_release < file_bytes / 10);
  // And the views still read right: a released page comes back from the file.
  CHECK(std::memcmp(first.data, first_bytes.data(), first.nbytes) == 0);
}

}  // namespace
}  // namespace blip2::engine
