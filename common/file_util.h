// Small filesystem helpers that report failures as statuses naming the path.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace blip2::common {

// Reads a whole file into memory. NOT_FOUND when it does not exist.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// Joins a directory and a file name with exactly one '/'.
std::string JoinPath(const std::string& dir, const std::string& name);

bool FileExists(const std::string& path);

}  // namespace blip2::common
