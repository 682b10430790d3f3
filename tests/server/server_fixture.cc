#include "tests/server/server_fixture.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <nlohmann/json.hpp>

#include "engine/model/safetensors.h"
#include "tests/test_support.h"

namespace blip2::testing {
namespace {

constexpr int kLongPositions = 1024;

std::string BuildLongContextModel() {
  namespace fs = std::filesystem;
  const std::string source = FixturesDir() + "/blip2-tiny-opt";
  const std::string dir = MakeTempDir() + "/blip2-tiny-opt-long";
  fs::create_directories(dir);
  for (const auto& entry : fs::directory_iterator(source)) {
    const std::string name = entry.path().filename().string();
    if (name.find("safetensors") == std::string::npos && name != "config.json" && name.find("reference") != 0) {
      fs::copy_file(entry.path(), dir + "/" + name);
    }
  }
  nlohmann::json config = nlohmann::json::parse(ReadFileOrDie(source + "/config.json"));
  config["text_config"]["max_position_embeddings"] = kLongPositions;
  WriteFile(dir + "/config.json", config.dump(2));
  auto checkpoint = engine::Checkpoint::Open(source);
  if (!checkpoint.ok()) throw std::runtime_error(checkpoint.status().ToString());
  std::vector<engine::TensorToWrite> tensors;
  for (const std::string& name : (*checkpoint)->Names()) {
    const engine::TensorView view = *(*checkpoint)->Get(name);
    engine::TensorToWrite t{name, view.dtype, view.shape,
                            std::string(reinterpret_cast<const char*>(view.data), view.nbytes)};
    if (name.find("embed_positions.weight") != std::string::npos) {
      // OPT keeps 2 extra rows; repeat the learned rows to fill the new table.
      const size_t row = view.nbytes / static_cast<size_t>(view.shape[0]);
      const std::string original = t.bytes;
      t.shape[0] = kLongPositions + 2;
      t.bytes.clear();
      for (int64_t r = 0; r < t.shape[0]; ++r) {
        t.bytes.append(original, static_cast<size_t>(r % view.shape[0]) * row, row);
      }
    }
    tensors.push_back(std::move(t));
  }
  const absl::Status written = engine::WriteSafetensors(dir + "/model.safetensors", tensors);
  if (!written.ok()) throw std::runtime_error(written.ToString());
  return dir;
}

}  // namespace

std::string LongContextModelDir() {
  static std::once_flag once;
  static std::string dir;
  std::call_once(once, [] { dir = BuildLongContextModel(); });
  return dir;
}

config::ServerConfig TestConfig(const std::string& model_dir) {
  config::ServerConfig cfg = server::DefaultServerConfig();
  cfg.set_model_dir(model_dir);
  cfg.set_host("127.0.0.1");
  cfg.set_port(0);
  cfg.set_metrics_port(0);
  cfg.set_warmup(false);
  cfg.set_log_level("warn");
  cfg.mutable_kv_cache()->set_cache_mb(64);
  cfg.mutable_limits()->set_max_new_tokens(1000);
  return cfg;
}

TestServer::TestServer(const config::ServerConfig& cfg) {
  auto started = server::Blip2Server::Start(cfg);
  if (!started.ok()) throw std::runtime_error(started.status().ToString());
  server_ = std::move(*started);
  channel_ = grpc::CreateChannel(target(), grpc::InsecureChannelCredentials());
  stub_ = v1::Blip2::NewStub(channel_);
}

TestServer::~TestServer() { server_->Drain(std::chrono::milliseconds(0)); }

std::string TestServer::target() const { return "127.0.0.1:" + std::to_string(server_->port()); }

std::string TestServer::HttpGet(const std::string& path) const {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(server_->metrics_port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request = "GET " + path + " HTTP/1.0\r\n\r\n";
    if (::send(fd, request.data(), request.size(), 0) == static_cast<ssize_t>(request.size())) {
      char buf[8192];
      ssize_t n;
      while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) response.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  const size_t body = response.find("\r\n\r\n");
  return body == std::string::npos ? "" : response.substr(body + 4);
}

double TestServer::Metric(const std::string& series) const {
  std::istringstream lines(HttpGet("/metrics"));
  std::string line;
  while (std::getline(lines, line)) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 && line[series.size()] == ' ') {
      return std::stod(line.substr(series.size() + 1));
    }
  }
  return 0;
}

double TestServer::WaitForMetric(const std::string& series, double want) const {
  return WaitForMetric(series, [want](double v) { return v == want; });
}

double TestServer::WaitForMetric(const std::string& series, const std::function<bool(double)>& done) const {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  double value = Metric(series);
  while (!done(value) && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    value = Metric(series);
  }
  return value;
}

std::string ImageBytes(const std::string& name) { return ReadFileOrDie(FixturesDir() + "/images/" + name); }

v1::GenerateRequest LongRequest(int tokens) {
  v1::GenerateRequest request;
  request.mutable_image()->set_data(ImageBytes("chelsea.jpg"));
  request.mutable_options()->set_max_new_tokens(tokens);
  request.mutable_options()->set_min_new_tokens(tokens);
  return request;
}

StreamEnd ReadToEnd(grpc::ClientReaderInterface<v1::GenerateResponse>& reader, int64_t already) {
  StreamEnd end;
  end.tokens = already;
  v1::GenerateResponse message;
  while (reader.Read(&message)) {
    end.tokens += message.token_ids_size();
    end.ended_final = message.has_final();
  }
  end.status = reader.Finish();
  return end;
}

}  // namespace blip2::testing
