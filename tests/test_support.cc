#include "tests/test_support.h"

#include <cstring>

#include "engine/model/safetensors.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <vector>

extern char** environ;

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

std::vector<float> FixturePixels(const std::string& model_dir, const std::string& image) {
  auto file = engine::SafetensorsFile::Open(model_dir + "/reference.safetensors");
  if (!file.ok()) throw std::runtime_error(std::string(file.status().message()));
  const auto& tensors = (*file)->tensors();
  const auto it = tensors.find("pixel_values." + image);
  if (it == tensors.end()) throw std::runtime_error(model_dir + ": no pixel_values." + image);
  std::vector<float> pixels(it->second.numel());
  std::memcpy(pixels.data(), it->second.data, it->second.nbytes);
  return pixels;
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

ProcessResult RunProcess(const std::vector<std::string>& argv) {
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) throw std::runtime_error("pipe failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipe_fds[1]);
  ProcessResult result;
  if (rc != 0) {
    ::close(pipe_fds[0]);
    throw std::runtime_error("cannot run " + argv[0]);
  }
  char buffer[4096];
  for (ssize_t n; (n = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0;) result.out.append(buffer, n);
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

}  // namespace blip2::testing
