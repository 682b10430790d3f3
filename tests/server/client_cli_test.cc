// `blip2 client` against a real server: the same results as `blip2 generate`,
// and every subcommand through its real interface. Also server reflection.
#include <grpcpp/generic/generic_stub.h>

#include "server/reflection.pb.h"  // generated from tests/server/reflection.proto
#include "tests/catch.h"
#include "tests/server/server_fixture.h"
#include "tests/test_support.h"

namespace blip2::testing {
namespace {

std::vector<std::string> Concat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST_CASE("blip2 client generate returns what blip2 generate computes, for every kind of decoding") {
  TestServer server(TestConfig(FixturesDir() + "/blip2-tiny-opt"));
  const std::string model = FixturesDir() + "/blip2-tiny-opt";
  const std::vector<std::vector<std::string>> option_sets = {
      {},
      {"--max-new-tokens", "30", "--min-new-tokens", "25"},
      {"--prompt", "a photo of", "--max-new-tokens", "12"},
      {"--question", "what is this?", "--max-new-tokens", "8"},
      {"--num-beams", "3", "--num-return-sequences", "2", "--max-new-tokens", "10"},
      {"--num-beams", "2", "--length-penalty", "0.5", "--early-stopping", "true"},
      {"--temperature", "0.7", "--top-k", "20", "--top-p", "0.9", "--seed", "11", "--max-new-tokens", "15"},
      {"--repetition-penalty", "1.5", "--no-repeat-ngram-size", "2", "--max-new-tokens", "20"},
      {"--stop", "in", "--max-new-tokens", "30"},
  };
  for (const std::string image : {"chelsea.jpg", "camera_gray.png"}) {
    const std::string path = FixturesDir() + "/images/" + image;
    for (const auto& options : option_sets) {
      const ProcessResult local = RunProcess(
          Concat({BLIP2_CLI, "generate", "--model", model, "--image", path, "--ids"}, options));
      const ProcessResult remote = RunProcess(
          Concat({BLIP2_CLI, "client", "generate", "--target", server.target(), "--image", path, "--ids"}, options));
      INFO(image << " " << Concat({}, options).size() << " options: " << (options.empty() ? "" : options[0]));
      REQUIRE(local.exit_code == 0);
      CHECK(remote.exit_code == 0);
      CHECK_FALSE(local.out.empty());
      CHECK(remote.out == local.out);
    }
  }
}

TEST_CASE("blip2 client: caption, answer, batch, register/release, info, health") {
  TestServer server(TestConfig(FixturesDir() + "/blip2-tiny-opt"));
  const std::string model = FixturesDir() + "/blip2-tiny-opt";
  const std::string image = FixturesDir() + "/images/coffee.jpg";
  const std::vector<std::string> client = {BLIP2_CLI, "client"};
  const std::vector<std::string> target = {"--target", server.target()};

  const ProcessResult caption = RunProcess(Concat(Concat(Concat(client, {"caption"}), target), {"--image", image}));
  const ProcessResult local = RunProcess({BLIP2_CLI, "generate", "--model", model, "--image", image});
  CHECK(caption.exit_code == 0);
  CHECK(caption.out == local.out);

  const ProcessResult answer = RunProcess(
      Concat(Concat(Concat(client, {"answer"}), target), {"--image", image, "--question", "what is it?"}));
  const ProcessResult local_answer =
      RunProcess({BLIP2_CLI, "generate", "--model", model, "--image", image, "--question", "what is it?"});
  CHECK(answer.exit_code == 0);
  CHECK(answer.out == local_answer.out);

  const ProcessResult batch = RunProcess(Concat(
      Concat(Concat(client, {"batch"}), target),
      {"--image", image, "--image", FixturesDir() + "/fixtures-missing-is-fine.txt", "--max-new-tokens", "4"}));
  CHECK(batch.exit_code == 1);  // the second file does not exist: the client says so before calling
  const ProcessResult batch_ok = RunProcess(Concat(Concat(Concat(client, {"batch"}), target),
                                                   {"--image", image, "--image", image, "--max-new-tokens", "4"}));
  CHECK(batch_ok.exit_code == 0);
  CHECK(std::count(batch_ok.out.begin(), batch_ok.out.end(), '\n') == 2);

  const ProcessResult reg = RunProcess(Concat(Concat(Concat(client, {"register"}), target), {"--image", image}));
  REQUIRE(reg.exit_code == 0);
  const std::string id = reg.out.substr(0, reg.out.find('\n'));
  CHECK(id.size() == 16);
  const ProcessResult by_id = RunProcess(Concat(Concat(Concat(client, {"caption"}), target), {"--image-id", id}));
  CHECK(by_id.out == local.out);
  CHECK(RunProcess(Concat(Concat(Concat(client, {"release"}), target), {"--image-id", id})).exit_code == 0);
  CHECK(RunProcess(Concat(Concat(Concat(client, {"release"}), target), {"--image-id", id})).exit_code == 1);

  const ProcessResult info = RunProcess(Concat(Concat(client, {"info"}), target));
  CHECK(info.exit_code == 0);
  CHECK_THAT(info.out, Catch::Contains("model_type: \"blip2-opt\""));
  const ProcessResult health = RunProcess(Concat(Concat(client, {"health"}), target));
  CHECK(health.exit_code == 0);
  CHECK(health.out == "SERVING\n");
}

// One request/response on a bidirectional stream through the generic stub.
template <class Request, class Response>
bool CallBidiOnce(grpc::Channel& channel, const std::string& method, const Request& request, Response* response) {
  grpc::GenericStub stub(channel.shared_from_this());
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  void* tag = nullptr;
  bool ok = false;
  auto call = stub.PrepareCall(&ctx, method, &cq);
  call->StartCall(reinterpret_cast<void*>(1));
  const auto wait = [&](intptr_t want) { return cq.Next(&tag, &ok) && reinterpret_cast<intptr_t>(tag) == want && ok; };
  if (!wait(1)) return false;
  std::string bytes = request.SerializeAsString();
  grpc::Slice slice(bytes);
  grpc::ByteBuffer out(&slice, 1);
  call->Write(out, reinterpret_cast<void*>(2));
  if (!wait(2)) return false;
  call->WritesDone(reinterpret_cast<void*>(5));
  if (!wait(5)) return false;
  grpc::ByteBuffer in;
  call->Read(&in, reinterpret_cast<void*>(3));
  if (!wait(3)) return false;
  std::vector<grpc::Slice> slices;
  in.Dump(&slices);
  std::string received;
  for (const grpc::Slice& s : slices) received.append(reinterpret_cast<const char*>(s.begin()), s.size());
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(4));
  cq.Next(&tag, &ok);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return status.ok() && response->ParseFromString(received);
}

TEST_CASE("Server reflection lists the API and the health service") {
  TestServer server(TestConfig(FixturesDir() + "/blip2-tiny-opt"));
  reflection::ServerReflectionRequest request;
  request.set_list_services("");
  reflection::ServerReflectionResponse response;
  REQUIRE(CallBidiOnce(*server.channel(), "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", request,
                       &response));
  std::set<std::string> names;
  for (const auto& s : response.list_services_response().service()) names.insert(s.name());
  CHECK(names.count("blip2.v1.Blip2") == 1);
  CHECK(names.count("grpc.health.v1.Health") == 1);
}

}  // namespace
}  // namespace blip2::testing
