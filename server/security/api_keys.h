// The API keys a server accepts, from a file of one key per line (blank lines
// and lines starting with '#' skipped). Calls carry `authorization: Bearer
// KEY` (gRPC metadata or an HTTP header). Keys are kept only as SHA-256
// digests and compared digest against digest in constant time, over every
// key, so neither timing nor a memory dump gives one away; no message names a
// key. The file is re-read by Reload (SIGHUP) and when its modification time
// or size changes (looked at, at most, once a second by Check): a removed key
// is refused from then on. Thread-safe.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace blip2::server {

class ApiKeys {
 public:
  // INVALID_ARGUMENT when the file cannot be read or holds no key.
  static absl::StatusOr<std::unique_ptr<ApiKeys>> Load(const std::string& path);

  // OK when `authorization` is "Bearer KEY" with a known KEY; else
  // UNAUTHENTICATED saying what is missing or wrong.
  absl::Status Check(absl::string_view authorization);
  // Re-reads the file now. On an error the keys in use stay.
  absl::Status Reload();
  size_t size() const;

 private:
  using Digest = std::array<unsigned char, 32>;
  explicit ApiKeys(std::string path) : path_(std::move(path)) {}
  void ReloadIfChanged();
  static absl::StatusOr<std::vector<Digest>> Read(const std::string& path);

  const std::string path_;
  mutable std::mutex mu_;
  std::vector<Digest> keys_;
  int64_t file_mtime_ns_ = 0;
  int64_t file_size_ = -1;
  std::chrono::steady_clock::time_point next_look_;
};

}  // namespace blip2::server
