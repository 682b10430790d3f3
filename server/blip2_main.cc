// `blip2`: the one user-facing executable. Dispatches to subcommands.
#include <cstdio>
#include <string>
#include <vector>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "server/commands.h"

namespace {

constexpr char kUsage[] =
    "usage: blip2 <command> [flags]\n"
    "commands:\n"
    "  encode --model DIR --image FILE [--image FILE ...] [--device cpu|cuda[:N]]\n"
    "         [--dtype float32|float16|bfloat16] [--max-image-pixels N] [--config FILE]\n"
    "      Runs the image path (vision encoder, Q-Former, projection) and prints,\n"
    "      per image, the shape, mean and L2 norm of the projected query embeddings\n"
    "      (of the Q-Former output for a retrieval checkpoint). --config reads a\n"
    "      blip2.config.EngineConfig in protobuf text format; flags override it.\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  // Results go to stdout; logs go to stderr.
  spdlog::set_default_logger(spdlog::stderr_color_mt("blip2"));
  const std::string command = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  if (command == "encode") return blip2::server::RunEncode(args);
  std::fprintf(stderr, "blip2: unknown command \"%s\"\n\n%s", command.c_str(), kUsage);
  return 2;
}
