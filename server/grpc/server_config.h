// The server's configuration: defaults, then a text-format file, then flags
// naming fields by path (--limits.max_new_tokens 64). One schema:
// proto/server_config.proto.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/runtime/engine.h"
#include "server_config.pb.h"

namespace blip2::server {

// Every field at the default its comment in server_config.proto states.
config::ServerConfig DefaultServerConfig();

// Defaults, then `--config FILE`, then each other `--path value` (or
// `--path=value`) setting the field at that dotted path; dashes count as
// underscores and `--model` is short for `--model_dir`. Flags named in
// `own_flags` are not fields: their values go to `*own` instead.
// INVALID_ARGUMENT names an unknown field or a value of the wrong type.
absl::StatusOr<config::ServerConfig> ServerConfigFromArgs(const std::vector<std::string>& args,
                                                          const std::vector<std::string>& own_flags,
                                                          std::map<std::string, std::string>* own);

// INVALID_ARGUMENT naming the first field out of range.
absl::Status ValidateServerConfig(const config::ServerConfig& cfg);

engine::EngineOptions ToEngineOptions(const config::ServerConfig& cfg);
engine::EngineConfig ToEngineConfig(const config::ServerConfig& cfg);

}  // namespace blip2::server
