// `blip2 serve` as a process: SIGTERM drains it (health NOT_SERVING, streams in
// flight complete) and it exits 0.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/catch.h"
#include "tests/server/server_fixture.h"
#include "tests/test_support.h"

extern char** environ;

namespace blip2::testing {
namespace {

using Health = grpc::health::v1::HealthCheckResponse;

TEST_CASE("SIGTERM: NOT_SERVING, the stream in flight completes, exit code 0") {
  const std::string dir = MakeTempDir();
  const std::string port_file = dir + "/ports";
  const std::vector<std::string> argv = {BLIP2_CLI, "serve", "--config", BLIP2_SOURCE_DIR "/configs/tiny-opt-cpu.textproto",
                                         "--model", LongContextModelDir(), "--port", "0", "--metrics_port", "0",
                                         "--limits.max_new_tokens", "1000", "--port_file", port_file};
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  REQUIRE(posix_spawn(&pid, args[0], nullptr, nullptr, args.data(), environ) == 0);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!std::filesystem::exists(port_file) && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  REQUIRE(std::filesystem::exists(port_file));
  int port = 0;
  std::ifstream(port_file) >> port;
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials());
  auto stub = v1::Blip2::NewStub(channel);
  auto health = grpc::health::v1::Health::NewStub(channel);
  auto check = [&] {
    grpc::ClientContext ctx;
    Health response;
    return health->Check(&ctx, grpc::health::v1::HealthCheckRequest(), &response).ok() ? response.status()
                                                                                         : Health::UNKNOWN;
  };
  CHECK(check() == Health::SERVING);

  grpc::ClientContext ctx;
  auto stream = stub->Generate(&ctx, LongRequest(900));
  v1::GenerateResponse message;
  REQUIRE(stream->Read(&message));
  REQUIRE(::kill(pid, SIGTERM) == 0);
  Health::ServingStatus seen = check();
  while (seen == Health::SERVING) seen = check();
  CHECK(seen == Health::NOT_SERVING);
  const StreamEnd end = ReadToEnd(*stream, message.token_ids_size());
  CHECK(end.status.ok());
  CHECK(end.ended_final);
  CHECK(end.tokens == 900);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

}  // namespace
}  // namespace blip2::testing
