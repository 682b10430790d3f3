#include "tests/test_support.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace blip2::testing {
namespace {

struct TempDirs {
  std::vector<std::string> paths;
  ~TempDirs() {
    for (const auto& p : paths) std::filesystem::remove_all(p);
  }
};

TempDirs& Temps() {
  static TempDirs temps;
  return temps;
}

}  // namespace

std::string FixturesDir() {
  const char* env = std::getenv("BLIP2_FIXTURES_DIR");
  return env != nullptr && *env != '\0' ? std::string(env) : std::string(BLIP2_DEFAULT_FIXTURES);
}

std::string MakeTempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "blip2_test_XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  Temps().paths.push_back(pattern);
  return pattern;
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string ReadFileOrDie(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace blip2::testing
