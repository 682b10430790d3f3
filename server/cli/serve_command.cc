// blip2 serve: the gRPC server until SIGTERM or SIGINT, then a graceful drain
// and exit code 0. SIGHUP re-reads the API keys.
#include <signal.h>
#include <sys/resource.h>

#include <cstdio>
#include <fstream>

#include <spdlog/spdlog.h>

#include "server/cli/commands.h"
#include "server/grpc/grpc_server.h"
#include "server/grpc/server_config.h"

namespace blip2::server {
namespace {

// Every open stream is a socket: the usual soft limit of 1024 descriptors
// would cap a server at about a thousand clients. Raise it to the hard limit
// (what the operator allows), as nginx's worker_rlimit_nofile does.
void RaiseOpenFileLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur >= limit.rlim_max) return;
  const rlim_t before = limit.rlim_cur;
  limit.rlim_cur = limit.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &limit) == 0) {
    spdlog::info("open files limit raised from {} to {}", before, limit.rlim_cur);
  }
}

}  // namespace

int RunServe(const std::vector<std::string>& args) {
  // Blocked before any thread starts, so every thread inherits the mask and
  // the signals wait for sigwait below instead of killing the process.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::map<std::string, std::string> own;
  auto cfg = ServerConfigFromArgs(args, {"port_file"}, &own);
  if (!cfg.ok()) return CommandFailed("serve", cfg.status());
  const spdlog::level::level_enum level = spdlog::level::from_str(cfg->log_level());
  if (level == spdlog::level::off && cfg->log_level() != "off") {
    return CommandFailed("serve", absl::InvalidArgumentError("log_level \"" + cfg->log_level() + "\" is unknown"));
  }
  spdlog::set_level(level);
  RaiseOpenFileLimit();
  spdlog::info("effective configuration: {}", cfg->ShortDebugString());
  auto server = Blip2Server::Start(*cfg);
  if (!server.ok()) return CommandFailed("serve", server.status());
  if (own.count("port_file")) {
    // Written once listening, so a supervisor (or a test) can wait for it.
    const std::string tmp = own["port_file"] + ".tmp";
    // "GRPC_PORT METRICS_PORT HTTP_PORT" (-1 for a port that is off).
    std::ofstream(tmp) << (*server)->port() << " " << (*server)->metrics_port() << " " << (*server)->http_port() << "\n";
    std::rename(tmp.c_str(), own["port_file"].c_str());
  }
  int signal_number = 0;
  while (sigwait(&signals, &signal_number) == 0 && signal_number == SIGHUP) {
    spdlog::info("received SIGHUP; reloading the API keys and the HTTP API's certificate");
    (*server)->Reload().IgnoreError();  // logged; the keys in use stay
  }
  spdlog::info("received {}; shutting down", signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
  (*server)->Drain(std::chrono::milliseconds(static_cast<int64_t>(cfg->drain_grace_seconds() * 1000)));
  return 0;
}

}  // namespace blip2::server
