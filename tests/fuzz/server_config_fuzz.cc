// The server's configuration: a text-format ServerConfig file (--config) and
// command-line overrides (--field.path VALUE), then validation. The first
// byte chooses; flags are the input's lines.
#include "absl/strings/str_split.h"
#include "server/grpc/server_config.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view rest = blip2::fuzz::Bytes(data + 1, size - 1);
  std::vector<std::string> args;
  if (data[0] % 2 == 0) {
    args = {"--config", blip2::fuzz::WriteScratch("config.textproto", rest)};
  } else {
    for (absl::string_view line : absl::StrSplit(absl::string_view(rest.data(), rest.size()), '\n')) {
      args.emplace_back(line);
    }
  }
  std::map<std::string, std::string> own;
  auto cfg = blip2::server::ServerConfigFromArgs(args, {"port_file"}, &own);
  if (cfg.ok()) {
    (void)blip2::server::ValidateServerConfig(*cfg);
    (void)blip2::server::ToEngineConfig(*cfg);
  }
  return 0;
}
