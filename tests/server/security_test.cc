// TLS, mutual TLS and API keys on the gRPC front, with certificates made by
// openssl for each run (make_test_certs.sh): real server, real clients, the
// `blip2 client` command line among them.
#include <cstdlib>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"

#include "grpc/health/v1/health.grpc.pb.h"
#include "server/security/tls.h"
#include "tests/catch.h"
#include "tests/server/server_fixture.h"
#include "tests/test_support.h"

namespace blip2::testing {
namespace {

using grpc::StatusCode;

// One set of certificates per process (making them takes about a second).
const std::string& Certs() {
  static const std::string dir = [] {
    std::string d = MakeTempDir() + "/certs";
    const ProcessResult made = RunProcess({"/bin/bash", std::string(BLIP2_SOURCE_DIR) + "/tests/server/make_test_certs.sh", d});
    if (made.exit_code != 0) throw std::runtime_error("make_test_certs.sh failed");
    return d;
  }();
  return dir;
}
std::string Cert(const std::string& name) { return Certs() + "/" + name; }

void WriteFile(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  std::ofstream(tmp) << text;
  std::rename(tmp.c_str(), path.c_str());  // whole, as an operator's tool would
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::shared_ptr<grpc::Channel> Channel(const std::string& target, const server::ClientTls& tls) {
  auto credentials = server::GrpcChannelCredentials(tls);
  REQUIRE(credentials.ok());
  return grpc::CreateChannel(target, *credentials);
}

// GetModelInfo over `channel`, with "authorization: <authorization>" when given.
grpc::Status Info(const std::shared_ptr<grpc::Channel>& channel, const std::string& authorization = "") {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!authorization.empty()) ctx.AddMetadata("authorization", authorization);
  v1::ModelInfo info;
  return v1::Blip2::NewStub(channel)->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info);
}

config::ServerConfig TlsConfig() {
  config::ServerConfig cfg = TestConfig(FixturesDir() + "/blip2-tiny-opt");
  cfg.mutable_security()->set_tls_cert_file(Cert("server.pem"));
  cfg.mutable_security()->set_tls_key_file(Cert("server.key"));
  return cfg;
}

TEST_CASE("security: with TLS only clients that trust the CA are served (not plaintext and not another CA)") {
  TestServer server(TlsConfig());
  CHECK(Info(Channel(server.target(), {true, Cert("ca.pem"), "", ""})).ok());
  const grpc::Status plaintext = Info(Channel(server.target(), {}));
  CHECK(plaintext.error_code() == StatusCode::UNAVAILABLE);
  const grpc::Status other_ca = Info(Channel(server.target(), {true, Cert("ca2.pem"), "", ""}));
  CHECK(other_ca.error_code() == StatusCode::UNAVAILABLE);
}

TEST_CASE("security: mutual TLS serves clients with a certificate the CA signed, and only them") {
  config::ServerConfig cfg = TlsConfig();
  cfg.mutable_security()->set_tls_client_ca_file(Cert("ca.pem"));
  TestServer server(cfg);
  CHECK(Info(Channel(server.target(), {true, Cert("ca.pem"), Cert("client.pem"), Cert("client.key")})).ok());
  CHECK(Info(Channel(server.target(), {true, Cert("ca.pem"), "", ""})).error_code() == StatusCode::UNAVAILABLE);
  // A certificate from another CA (server2's, signed by ca2) is refused too.
  CHECK(Info(Channel(server.target(), {true, Cert("ca.pem"), Cert("server2.pem"), Cert("server2.key")})).error_code() ==
        StatusCode::UNAVAILABLE);
}

TEST_CASE("security: API keys: missing or malformed or wrong or revoked keys get UNAUTHENTICATED and health stays open") {
  const std::string keys = MakeTempDir() + "/keys";
  WriteFile(keys, "# operators' comment\nkey-one\n\n  key-two  \n");
  config::ServerConfig cfg = TestConfig(FixturesDir() + "/blip2-tiny-opt");
  cfg.mutable_security()->set_api_keys_file(keys);
  TestServer server(cfg);
  const auto channel = server.channel();

  const grpc::Status missing = Info(channel);
  CHECK(missing.error_code() == StatusCode::UNAUTHENTICATED);
  CHECK_THAT(missing.error_message(), Catch::Contains("authorization: Bearer"));
  const grpc::Status basic = Info(channel, "Basic a2V5LW9uZQ==");
  CHECK(basic.error_code() == StatusCode::UNAUTHENTICATED);
  const grpc::Status wrong = Info(channel, "Bearer key-three");
  CHECK(wrong.error_code() == StatusCode::UNAUTHENTICATED);
  CHECK_THAT(wrong.error_message(), !Catch::Contains("key-three"));  // no message repeats a key
  CHECK(Info(channel, "Bearer key-one").ok());
  CHECK(Info(channel, "bearer key-two").ok());  // the scheme is case-insensitive; spaces around the key are not part of it

  // A model call with and without the key.
  v1::CaptionRequest caption;
  caption.mutable_image()->set_data(ImageBytes("chelsea.jpg"));
  caption.mutable_options()->set_max_new_tokens(3);
  v1::Completion completion;
  grpc::ClientContext without;
  CHECK(server.stub().Caption(&without, caption, &completion).error_code() == StatusCode::UNAUTHENTICATED);
  grpc::ClientContext with;
  with.AddMetadata("authorization", "Bearer key-two");
  CHECK(server.stub().Caption(&with, caption, &completion).ok());

  // Health is for load balancers: no key.
  grpc::ClientContext health_ctx;
  grpc::health::v1::HealthCheckRequest health_request;
  grpc::health::v1::HealthCheckResponse health;
  CHECK(grpc::health::v1::Health::NewStub(channel)->Check(&health_ctx, health_request, &health).ok());

  // Revoked by a reload (SIGHUP in `blip2 serve`): key-one is refused from then on.
  WriteFile(keys, "key-two\n");
  REQUIRE(server.server().Reload().ok());
  CHECK(Info(channel, "Bearer key-one").error_code() == StatusCode::UNAUTHENTICATED);
  CHECK(Info(channel, "Bearer key-two").ok());
  // A file with no key is not taken: the keys in use stay.
  WriteFile(keys, "# nothing\n");
  CHECK_FALSE(server.server().Reload().ok());
  CHECK(Info(channel, "Bearer key-two").ok());
  // Changed on disk without a signal: picked up within about a second.
  WriteFile(keys, "key-two\nkey-four\n");
  const auto start = std::chrono::steady_clock::now();
  while (!Info(channel, "Bearer key-four").ok() && std::chrono::steady_clock::now() - start < std::chrono::seconds(10)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(Info(channel, "Bearer key-four").ok());
}

TEST_CASE("security: bad settings are refused at start naming the field") {
  const auto refused = [](const config::ServerConfig& cfg, const std::string& what) {
    auto started = server::Blip2Server::Start(cfg);
    INFO(started.status().ToString());
    CHECK(absl::IsInvalidArgument(started.status()));
    CHECK_THAT(std::string(started.status().message()), Catch::Contains(what));
  };
  config::ServerConfig cfg = TlsConfig();
  cfg.mutable_security()->clear_tls_key_file();
  refused(cfg, "set both tls_cert_file and tls_key_file");
  cfg = TlsConfig();
  cfg.mutable_security()->set_tls_key_file(Cert("server2.key"));
  refused(cfg, "is not the key of");
  cfg = TlsConfig();
  cfg.mutable_security()->set_tls_cert_file(Cert("missing.pem"));
  refused(cfg, "tls_cert_file");
  cfg = TlsConfig();
  cfg.mutable_security()->set_tls_cert_file(Cert("server.key"));  // a key where the certificate belongs
  refused(cfg, "holds no PEM certificate");
  cfg = TestConfig(FixturesDir() + "/blip2-tiny-opt");
  cfg.mutable_security()->set_tls_client_ca_file(Cert("ca.pem"));
  refused(cfg, "tls_client_ca_file needs");
  cfg = TestConfig(FixturesDir() + "/blip2-tiny-opt");
  const std::string empty = MakeTempDir() + "/keys";
  WriteFile(empty, "\n# no key yet\n");
  cfg.mutable_security()->set_api_keys_file(empty);
  refused(cfg, "holds no key");
  cfg.mutable_security()->set_api_keys_file(empty + ".missing");
  refused(cfg, "api_keys_file");
}

TEST_CASE("security: a rotated certificate reaches new connections while an open stream goes on") {
  // The server reads its certificate from files that the test replaces with
  // another CA's (the watcher looks every second).
  const std::string dir = MakeTempDir();
  WriteFile(dir + "/tls.pem", ReadAll(Cert("server.pem")));
  WriteFile(dir + "/tls.key", ReadAll(Cert("server.key")));
  config::ServerConfig cfg = TestConfig(LongContextModelDir());
  cfg.mutable_security()->set_tls_cert_file(dir + "/tls.pem");
  cfg.mutable_security()->set_tls_key_file(dir + "/tls.key");
  cfg.mutable_security()->set_tls_refresh_seconds(1);
  TestServer server(cfg);
  const auto old_channel = Channel(server.target(), {true, Cert("ca.pem"), "", ""});
  grpc::ClientContext ctx;
  auto stream = v1::Blip2::NewStub(old_channel)->Generate(&ctx, LongRequest(600));
  v1::GenerateResponse first;
  REQUIRE(stream->Read(&first));

  WriteFile(dir + "/tls.key", ReadAll(Cert("server2.key")));
  WriteFile(dir + "/tls.pem", ReadAll(Cert("server2.pem")));
  const auto start = std::chrono::steady_clock::now();
  bool rotated = false;
  while (!rotated && std::chrono::steady_clock::now() - start < std::chrono::seconds(20)) {
    rotated = Info(Channel(server.target(), {true, Cert("ca2.pem"), "", ""})).ok();
    if (!rotated) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  CHECK(rotated);
  // New connections see the new certificate only.
  CHECK(Info(Channel(server.target(), {true, Cert("ca.pem"), "", ""})).error_code() == StatusCode::UNAVAILABLE);
  // The stream opened before the rotation ends normally, every token read.
  const StreamEnd end = ReadToEnd(*stream, first.token_ids_size());
  CHECK(end.status.ok());
  CHECK(end.tokens == 600);
}

// `curl` (over TLS when `ca` is given) GET /v1/models: the HTTP status, or 0
// when no connection was made.
int CurlModels(int port, const std::string& ca, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> argv = {"/usr/bin/curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"};
  if (!ca.empty()) argv.insert(argv.end(), {"--cacert", ca});
  argv.insert(argv.end(), extra.begin(), extra.end());
  argv.push_back(absl::StrCat(ca.empty() ? "http" : "https", "://127.0.0.1:", port, "/v1/models"));
  const ProcessResult r = RunProcess(argv);
  return std::atoi(r.out.c_str());
}

TEST_CASE("security: the HTTP API speaks TLS and mutual TLS too, and reloads its certificate on SIGHUP") {
  const std::string dir = MakeTempDir();
  WriteFile(dir + "/tls.pem", ReadAll(Cert("server.pem")));
  WriteFile(dir + "/tls.key", ReadAll(Cert("server.key")));
  config::ServerConfig cfg = TestConfig(FixturesDir() + "/blip2-tiny-opt");
  cfg.set_http_port(0);
  cfg.mutable_security()->set_tls_cert_file(dir + "/tls.pem");
  cfg.mutable_security()->set_tls_key_file(dir + "/tls.key");
  {
    TestServer server(cfg);
    const int port = server.server().http_port();
    CHECK(CurlModels(port, Cert("ca.pem")) == 200);
    CHECK(CurlModels(port, "") == 0);               // plaintext: no HTTP answer
    CHECK(CurlModels(port, Cert("ca2.pem")) == 0);  // a CA that did not sign it
    // Rotated: after a reload (SIGHUP) new connections get the new certificate.
    WriteFile(dir + "/tls.key", ReadAll(Cert("server2.key")));
    WriteFile(dir + "/tls.pem", ReadAll(Cert("server2.pem")));
    REQUIRE(server.server().Reload().ok());
    CHECK(CurlModels(port, Cert("ca2.pem")) == 200);
    CHECK(CurlModels(port, Cert("ca.pem")) == 0);
  }
  WriteFile(dir + "/tls.pem", ReadAll(Cert("server.pem")));
  WriteFile(dir + "/tls.key", ReadAll(Cert("server.key")));
  cfg.mutable_security()->set_tls_client_ca_file(Cert("ca.pem"));
  TestServer mutual(cfg);
  const int port = mutual.server().http_port();
  CHECK(CurlModels(port, Cert("ca.pem"), {"--cert", Cert("client.pem"), "--key", Cert("client.key")}) == 200);
  CHECK(CurlModels(port, Cert("ca.pem")) == 0);  // no client certificate
}

TEST_CASE("security: blip2 client speaks TLS and sends the API key from a file or BLIP2_API_KEY") {
  config::ServerConfig cfg = TlsConfig();
  const std::string keys = MakeTempDir() + "/keys";
  WriteFile(keys, "client-key\n");
  cfg.mutable_security()->set_api_keys_file(keys);
  TestServer server(cfg);
  const std::vector<std::string> info = {BLIP2_CLI, "client", "info", "--target", server.target()};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> argv = info;
    argv.insert(argv.end(), extra.begin(), extra.end());
    return RunProcess(argv);
  };
  const ProcessResult ok = with({"--tls", "--ca", Cert("ca.pem"), "--api-key-file", keys});
  CHECK(ok.exit_code == 0);
  CHECK_THAT(ok.out, Catch::Contains("blip2-tiny-opt"));
  CHECK(with({"--tls", "--ca", Cert("ca.pem")}).exit_code != 0);  // no key
  CHECK(with({"--api-key-file", keys}).exit_code != 0);           // plaintext
  CHECK(with({"--ca", Cert("ca.pem"), "--api-key-file", keys}).exit_code != 0);  // --ca without --tls
  setenv("BLIP2_API_KEY", "client-key", 1);
  CHECK(with({"--tls", "--ca", Cert("ca.pem")}).exit_code == 0);
  unsetenv("BLIP2_API_KEY");

  // The Python client (Debian's python3-grpcio) likewise.
  const std::vector<std::string> python = {"/usr/bin/python3", std::string(BLIP2_SOURCE_DIR) + "/clients/python/blip2_client.py",
                                           "--stubs", BLIP2_PY_STUBS, "--target", server.target()};
  auto py = [&](std::vector<std::string> extra) {
    std::vector<std::string> argv = python;
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back("info");
    return RunProcess(argv);
  };
  const ProcessResult py_ok = py({"--tls", "--ca", Cert("ca.pem"), "--api-key-file", keys});
  CHECK(py_ok.exit_code == 0);
  CHECK_THAT(py_ok.out, Catch::Contains("blip2-tiny-opt"));
  CHECK(py({"--tls", "--ca", Cert("ca.pem")}).exit_code != 0);
  CHECK(py({"--api-key-file", keys}).exit_code != 0);
}

}  // namespace
}  // namespace blip2::testing
