// Subcommands of the `blip2` tool. Each takes the arguments after its name and
// returns the process exit code.
#pragma once

#include <string>
#include <vector>

namespace blip2::server {

// blip2 encode --model DIR --image FILE [--image FILE ...] [--device D] [--dtype T]
//              [--max-image-pixels N] [--config FILE]
int RunEncode(const std::vector<std::string>& args);

// blip2 generate --model DIR --image FILE [--prompt TEXT | --question TEXT] [decoding flags]
//                [--stream] [--ids]
int RunGenerate(const std::vector<std::string>& args);

}  // namespace blip2::server
