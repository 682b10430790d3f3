#include "server/security/tls.h"

#include <openssl/pem.h>
#include <openssl/x509.h>

#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/status_macros.h"

namespace blip2::server {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* field) {
  auto text = common::ReadFile(path);
  if (!text.ok()) return absl::InvalidArgumentError(absl::StrCat("security.", field, ": ", text.status().message()));
  return *text;
}

// The certificate parses, the key parses, and the key is the certificate's.
absl::Status CheckKeyPair(const std::string& cert_pem, const std::string& key_pem) {
  BIO* cert_bio = BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size()));
  X509* cert = PEM_read_bio_X509(cert_bio, nullptr, nullptr, nullptr);
  BIO_free(cert_bio);
  BIO* key_bio = BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(key_bio, nullptr, nullptr, nullptr);
  BIO_free(key_bio);
  absl::Status status;
  if (cert == nullptr) {
    status = absl::InvalidArgumentError("security.tls_cert_file holds no PEM certificate");
  } else if (key == nullptr) {
    status = absl::InvalidArgumentError("security.tls_key_file holds no PEM private key (or it is encrypted)");
  } else if (X509_check_private_key(cert, key) != 1) {
    status = absl::InvalidArgumentError("security.tls_key_file is not the key of security.tls_cert_file");
  }
  X509_free(cert);
  EVP_PKEY_free(key);
  return status;
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> GrpcServerCredentials(const config::Security& s) {
  const bool cert = !s.tls_cert_file().empty(), key = !s.tls_key_file().empty();
  if (!cert && !key) {
    if (!s.tls_client_ca_file().empty()) {
      return absl::InvalidArgumentError("security.tls_client_ca_file needs tls_cert_file and tls_key_file");
    }
    return grpc::InsecureServerCredentials();
  }
  if (!cert || !key) return absl::InvalidArgumentError("security: set both tls_cert_file and tls_key_file");
  if (s.tls_refresh_seconds() <= 0) return absl::InvalidArgumentError("security.tls_refresh_seconds must be positive");
  ASSIGN_OR_RETURN(const std::string cert_pem, ReadPem(s.tls_cert_file(), "tls_cert_file"));
  ASSIGN_OR_RETURN(const std::string key_pem, ReadPem(s.tls_key_file(), "tls_key_file"));
  RETURN_IF_ERROR(CheckKeyPair(cert_pem, key_pem));
  const bool mutual = !s.tls_client_ca_file().empty();
  if (mutual) RETURN_IF_ERROR(ReadPem(s.tls_client_ca_file(), "tls_client_ca_file").status());
  auto provider =
      mutual ? std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
                   s.tls_key_file(), s.tls_cert_file(), s.tls_client_ca_file(), s.tls_refresh_seconds())
             : std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(s.tls_key_file(), s.tls_cert_file(),
                                                                                    s.tls_refresh_seconds());
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (mutual) {
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  } else {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> GrpcChannelCredentials(const ClientTls& tls) {
  if (!tls.enabled) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions options;
  if (!tls.ca_file.empty()) {
    ASSIGN_OR_RETURN(options.pem_root_certs, common::ReadFile(tls.ca_file));
  }
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return absl::InvalidArgumentError("a client certificate needs its key, and a key its certificate");
  }
  if (!tls.cert_file.empty()) {
    ASSIGN_OR_RETURN(options.pem_cert_chain, common::ReadFile(tls.cert_file));
    ASSIGN_OR_RETURN(options.pem_private_key, common::ReadFile(tls.key_file));
  }
  return grpc::SslCredentials(options);
}

}  // namespace blip2::server
