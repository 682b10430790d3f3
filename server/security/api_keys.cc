#include "server/security/api_keys.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <sys/stat.h>

#include <spdlog/spdlog.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/file_util.h"

namespace blip2::server {
namespace {

std::array<unsigned char, 32> Sha256(absl::string_view text) {
  std::array<unsigned char, 32> digest;
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest.data());
  return digest;
}

// The file's modification time (ns) and size, or {0, -1} when it cannot be read.
std::pair<int64_t, int64_t> FileStamp(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return {0, -1};
  return {static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec, static_cast<int64_t>(st.st_size)};
}

constexpr auto kLookEvery = std::chrono::seconds(1);

}  // namespace

absl::StatusOr<std::vector<ApiKeys::Digest>> ApiKeys::Read(const std::string& path) {
  auto text = common::ReadFile(path);
  if (!text.ok()) return absl::InvalidArgumentError(absl::StrCat("api_keys_file: ", text.status().message()));
  std::vector<Digest> keys;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || absl::StartsWith(line, "#")) continue;
    keys.push_back(Sha256(line));
  }
  if (keys.empty()) return absl::InvalidArgumentError(absl::StrCat("api_keys_file ", path, " holds no key"));
  return keys;
}

absl::StatusOr<std::unique_ptr<ApiKeys>> ApiKeys::Load(const std::string& path) {
  std::unique_ptr<ApiKeys> store(new ApiKeys(path));
  const auto [mtime, size] = FileStamp(path);
  auto keys = Read(path);
  if (!keys.ok()) return keys.status();
  store->keys_ = std::move(*keys);
  store->file_mtime_ns_ = mtime;
  store->file_size_ = size;
  store->next_look_ = std::chrono::steady_clock::now() + kLookEvery;
  return store;
}

absl::Status ApiKeys::Reload() {
  const auto [mtime, size] = FileStamp(path_);
  auto keys = Read(path_);
  std::lock_guard<std::mutex> lock(mu_);
  file_mtime_ns_ = mtime;
  file_size_ = size;
  if (!keys.ok()) {
    spdlog::warn("API keys not reloaded, the {} keys in use stay: {}", keys_.size(), std::string(keys.status().message()));
    return keys.status();
  }
  keys_ = std::move(*keys);
  spdlog::info("API keys reloaded from {}: {} keys", path_, keys_.size());
  return absl::OkStatus();
}

void ApiKeys::ReloadIfChanged() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = std::chrono::steady_clock::now();
    if (now < next_look_) return;
    next_look_ = now + kLookEvery;
    if (FileStamp(path_) == std::make_pair(file_mtime_ns_, file_size_)) return;
  }
  Reload().IgnoreError();  // logged; the keys in use stay
}

absl::Status ApiKeys::Check(absl::string_view authorization) {
  ReloadIfChanged();
  constexpr absl::string_view kBearer = "Bearer ";
  if (authorization.empty()) {
    return absl::UnauthenticatedError("this server needs an API key: send \"authorization: Bearer KEY\"");
  }
  if (authorization.size() <= kBearer.size() || !absl::StartsWithIgnoreCase(authorization, kBearer)) {
    return absl::UnauthenticatedError("the authorization value is not \"Bearer KEY\"");
  }
  const Digest given = Sha256(absl::StripAsciiWhitespace(authorization.substr(kBearer.size())));
  std::lock_guard<std::mutex> lock(mu_);
  // Every key is compared, in constant time, whatever matched before.
  int found = 0;
  for (const Digest& key : keys_) found |= CRYPTO_memcmp(key.data(), given.data(), given.size()) == 0;
  if (!found) return absl::UnauthenticatedError("the API key is not valid");
  return absl::OkStatus();
}

size_t ApiKeys::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return keys_.size();
}

}  // namespace blip2::server
