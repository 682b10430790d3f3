// Helpers shared by the tests: where the fixtures are, scratch folders, files.
#pragma once

#include <string>
#include <vector>

namespace blip2::testing {

// $BLIP2_FIXTURES_DIR, else the project's copy in tests/fixtures.
std::string FixturesDir();

// The preprocessed pixels [C, H, W] a fixture model folder stores for `image`
// (its reference.safetensors tensor "pixel_values.<image>"); throws if absent.
std::vector<float> FixturePixels(const std::string& model_dir, const std::string& image);

// A fresh empty folder under the system temp dir, removed at exit.
std::string MakeTempDir();

void WriteFile(const std::string& path, const std::string& bytes);
std::string ReadFileOrDie(const std::string& path);

struct ProcessResult {
  int exit_code = -1;
  std::string out;  // standard output; standard error is discarded
};
// Runs `argv` (argv[0] a path) without a shell and collects its output.
ProcessResult RunProcess(const std::vector<std::string>& argv);

}  // namespace blip2::testing
