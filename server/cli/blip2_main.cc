// `blip2`: the one user-facing executable. Dispatches to subcommands.
#include <cstdio>
#include <string>
#include <vector>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "server/cli/commands.h"
#include "server/grpc/version.h"

namespace {

constexpr char kUsage[] =
    "usage: blip2 <command> [flags]\n"
    "commands:\n"
    "  encode --model DIR --image FILE [--image FILE ...] [--device cpu|cuda[:N]]\n"
    "         [--dtype float32|float16|bfloat16] [--max-image-pixels N] [--config FILE]\n"
    "      Runs the image path (vision encoder, Q-Former, projection) and prints,\n"
    "      per image, the shape, mean and L2 norm of the projected query embeddings\n"
    "      (of the Q-Former output for a retrieval checkpoint). --config reads a\n"
    "      blip2.config.ServerConfig in protobuf text format; flags override it.\n"
    "  generate --model DIR --image FILE [--prompt TEXT | --question TEXT]\n"
    "         [--max-new-tokens N] [--min-new-tokens N] [--num-beams K] [--length-penalty L]\n"
    "         [--early-stopping true|false|never] [--num-return-sequences N] [--temperature T]\n"
    "         [--top-p P] [--top-k K] [--seed S] [--repetition-penalty R]\n"
    "         [--no-repeat-ngram-size N] [--stop TEXT ...] [--stream] [--ids [--logprobs K]]\n"
    "         [--device cpu|cuda[:N]] [--dtype float32|float16|bfloat16] [--quantization none|int8]\n"
    "      Captions the image (no prompt) or continues the prompt; --question Q uses\n"
    "      the checkpoints' \"Question: Q Answer:\" prompt. Prints one line of text per\n"
    "      returned sequence, streams it (--stream), or prints the new token ids (--ids),\n"
    "      with a line \"logprobs v1 v2 ...\" of their log-probabilities (--logprobs).\n"
    "      Unset options take generation_config.json's values.\n"
    "  match --model DIR --image FILE --text TEXT [--text TEXT ...] [--max-text-tokens N]\n"
    "      With a retrieval checkpoint (blip2-itm-vit-g): one line per text, best first:\n"
    "      ITM match probability, ITC similarity, the text.\n"
    "  embed --model DIR [--image FILE ...] [--text TEXT ...] [--max-text-tokens N]\n"
    "      Normalised embeddings: a line per image and per text (size and first values).\n"
    "  serve --config FILE [--field.path VALUE ...] [--port_file FILE]\n"
    "      The gRPC server (docs/server.md).\n"
    "  client caption|answer|generate|batch|register|release|info|health|match|embed\n"
    "         --target HOST:PORT [--tls [--ca FILE] [--cert FILE --key FILE]]\n"
    "         [--api-key-file FILE] ...\n"
    "      Calls a running server (TLS: trusting --ca, or the system's roots; mTLS with\n"
    "      --cert/--key; the API key from FILE or the BLIP2_API_KEY environment variable).\n"
    "      register --image FILE [--ttl-seconds N]: a lease on the image (released by\n"
    "      release --image-id ID, or lapsing after N seconds).\n";

}  // namespace

namespace blip2::server {

int CommandFailed(const std::string& command, const absl::Status& status) {
  std::fprintf(stderr, "blip2 %s: %s\n", command.c_str(), std::string(status.ToString()).c_str());
  return 1;
}

}  // namespace blip2::server

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
  if (command == "generate") return blip2::server::RunGenerate(args);
  if (command == "match") return blip2::server::RunMatch(args);
  if (command == "embed") return blip2::server::RunEmbed(args);
  if (command == "serve") return blip2::server::RunServe(args);
  if (command == "client") return blip2::server::RunClient(args);
  if (command == "--version") {
    std::printf("blip2-serve %s\n", blip2::server::kServerVersion);
    return 0;
  }
  std::fprintf(stderr, "blip2: unknown command \"%s\"\n\n%s", command.c_str(), kUsage);
  return 2;
}
