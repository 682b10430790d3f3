// `blip2 generate` through its real interface (a child process), against
// transformers: for every case and every generate run of each OPT and T5
// fixture folder, `--ids` with the case's image and prompt and the run's kwargs as
// flags prints exactly the run's new ids; without --ids, the greedy run prints
// `decoded_greedy`. Data-driven over BLIP2_FIXTURES_DIR.
#include <filesystem>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "engine/model_config.h"
#include "tests/catch.h"
#include "tests/parity/fixture_set.h"
#include "tests/test_support.h"

namespace blip2::testing {
namespace {

using nlohmann::json;

std::vector<std::string> BaseArgs(const std::string& dir, const json& c) {
  std::vector<std::string> args = {BLIP2_CLI, "generate", "--model", dir, "--image",
                                   FindImage(FixturesDir(), c["image"].get<std::string>())};
  if (!c["prompt"].get<std::string>().empty()) {
    args.push_back("--prompt");
    args.push_back(c["prompt"].get<std::string>());
  }
  return args;
}

// kwargs -> flags. eos_token_id is not a flag: the folder's generation_config.json carries it.
void AddKwargFlags(const json& kwargs, const engine::ModelSpec& spec, std::vector<std::string>* args) {
  for (const auto& [key, value] : kwargs.items()) {
    if (key == "eos_token_id") {
      const auto ids = value.is_array() ? value.get<std::vector<int64_t>>() : std::vector<int64_t>{value.get<int64_t>()};
      REQUIRE(ids == spec.generation.eos_token_id);
      continue;
    }
    std::string flag = key;
    std::replace(flag.begin(), flag.end(), '_', '-');
    args->push_back("--" + flag);
    args->push_back(value.is_string() ? value.get<std::string>() : value.dump());
  }
}

std::vector<std::vector<int64_t>> ParseIdLines(const std::string& out) {
  std::vector<std::vector<int64_t>> rows;
  for (const std::string& line : std::vector<std::string>(absl::StrSplit(out, '\n', absl::SkipEmpty()))) {
    std::vector<int64_t> ids;
    std::istringstream in(line);
    for (int64_t id; in >> id;) ids.push_back(id);
    rows.push_back(ids);
  }
  return rows;
}

TEST_CASE("parity: blip2 generate --ids prints transformers' new ids for every run") {
  int runs = 0;
  for (const CaseFolder& folder : DiscoverCaseFolders(FixturesDir())) {
    const std::string& dir = folder.dir;
    const engine::ModelSpec* spec = &folder.spec;
    const int64_t pad = ReturnedPadId(*spec);
    for (const auto& [name, c] : folder.reference["cases"].items()) {
      const size_t prompt_len = NewIdsStart(*spec, c);
      for (const auto& run : c.contains("generate") ? c["generate"] : json::array()) {
        std::vector<std::string> args = BaseArgs(dir, c);
        AddKwargFlags(run["kwargs"], *spec, &args);
        args.push_back("--ids");
        INFO(absl::StrJoin(args, " "));
        const ProcessResult r = RunProcess(args);
        REQUIRE(r.exit_code == 0);
        const auto got = ParseIdLines(r.out);
        const auto expected = run["sequences"].get<std::vector<std::vector<int64_t>>>();
        REQUIRE(got.size() == expected.size());
        for (size_t i = 0; i < got.size(); ++i) {
          std::vector<int64_t> want(expected[i].begin() + prompt_len, expected[i].end());
          // transformers pads shorter sequences; the CLI prints them unpadded.
          while (want.size() > got[i].size() && want.back() == pad) want.pop_back();
          CHECK(got[i] == want);
        }
        ++runs;
      }
      if (c.contains("decoded_greedy") && (c.contains("greedy_manual_new") || c.contains("generate_greedy_raw"))) {
        const size_t steps = c.contains("greedy_manual_new") ? c["greedy_manual_new"].size()
                                                             : c["generate_greedy_raw"].size() - prompt_len;
        std::vector<std::string> args = BaseArgs(dir, c);
        args.insert(args.end(), {"--max-new-tokens", std::to_string(steps)});
        INFO(absl::StrJoin(args, " "));
        const ProcessResult r = RunProcess(args);
        REQUIRE(r.exit_code == 0);
        CHECK(r.out == c["decoded_greedy"].get<std::string>() + "\n");
      }
    }
  }
  std::printf("PARITY blip2 generate --ids: %d runs compared\n", runs);
  CHECK(runs > 0);
}

}  // namespace
}  // namespace blip2::testing
