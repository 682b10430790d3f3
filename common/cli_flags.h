// Minimal `--name value` flag parsing for the blip2 subcommands.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace blip2::common {

// Flags of one subcommand; a flag may repeat (`--image a --image b`).
class CliFlags {
 public:
  // `known` lists the accepted flag names (without dashes); `switches` those
  // that take no value. INVALID_ARGUMENT for unknown flags or missing values.
  static absl::StatusOr<CliFlags> Parse(const std::vector<std::string>& args, const std::vector<std::string>& known,
                                        const std::vector<std::string>& switches = {});

  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  std::string Get(const std::string& name, const std::string& fallback) const;
  std::vector<std::string> GetAll(const std::string& name) const;
  absl::StatusOr<int64_t> GetInt(const std::string& name, int64_t fallback) const;

 private:
  std::map<std::string, std::vector<std::string>> values_;
};

}  // namespace blip2::common
