// Subcommands of the `blip2` tool. Each takes the arguments after its name and
// returns the process exit code.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace blip2::server {

// Prints "blip2 <command>: <status>" to stderr and returns the exit code 1.
int CommandFailed(const std::string& command, const absl::Status& status);

// blip2 encode --model DIR --image FILE [--image FILE ...] [--device D] [--dtype T]
//              [--max-image-pixels N] [--config FILE]
int RunEncode(const std::vector<std::string>& args);

// blip2 generate --model DIR --image FILE [--prompt TEXT | --question TEXT] [decoding flags]
//                [--stream] [--ids]
int RunGenerate(const std::vector<std::string>& args);

// blip2 match --model DIR --image FILE --text TEXT [--text TEXT ...] [--max-text-tokens N]
//             [--device D] [--dtype T]
int RunMatch(const std::vector<std::string>& args);

// blip2 embed --model DIR [--image FILE ...] [--text TEXT ...] [--max-text-tokens N]
int RunEmbed(const std::vector<std::string>& args);

// blip2 serve --config FILE [--field.path VALUE ...] [--port_file FILE]
int RunServe(const std::vector<std::string>& args);

// blip2 client caption|answer|generate|batch|register|release|info|health --target HOST:PORT ...
int RunClient(const std::vector<std::string>& args);

}  // namespace blip2::server
