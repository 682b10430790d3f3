// TLS for gRPC, both ends. The server's certificate and key (and, for mTLS,
// the CA that signs client certificates) come from PEM files that gRPC's file
// watcher re-reads every refresh interval, so certificates rotate without a
// restart and without dropping open connections.
#pragma once

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "server_config.pb.h"

namespace blip2::server {

// TLS when security sets a certificate and key (checked now: readable PEM, a
// key that belongs to the certificate, a readable CA), else plaintext.
// INVALID_ARGUMENT naming the field otherwise.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> GrpcServerCredentials(const config::Security& security);

// What a client needs to reach a TLS server: the CA that signed the server's
// certificate (empty: the system's roots) and, for mTLS, its own certificate
// and key.
struct ClientTls {
  bool enabled = false;
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
};
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> GrpcChannelCredentials(const ClientTls& tls);

}  // namespace blip2::server
