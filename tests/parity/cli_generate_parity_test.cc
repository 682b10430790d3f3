// `blip2 generate` through its real interface (a child process), against
// transformers: for every case and every generate run of each OPT and T5
// fixture folder, `--ids` with the case's image file and prompt and the run's
// kwargs as flags; without --ids, the greedy run's text. Data-driven over
// BLIP2_FIXTURES_DIR.
//
// The command decodes the image file itself, and our decoder's pixels differ
// from PIL's within the pixel tolerance (pixel_parity_test.cc); a sensitive
// checkpoint can turn that into other ids. So each run is checked as a chain
// of exact equalities:
//   the command's ids == the library's ids on the same decoded pixels, and
//   the library's ids on transformers' pixels == transformers' ids,
// and where the two pixel sets give the same ids, the command's ids equal
// transformers' too. The PARITY line counts the runs that met transformers
// end to end (all of them on the bundled fixtures).
#include <filesystem>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "engine/generation/captioner.h"
#include "engine/model/model_config.h"
#include "tests/catch.h"
#include "tests/parity/fixture_set.h"
#include "tests/parity/image_files.h"
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

std::vector<std::vector<int64_t>> Ids(const engine::CaptionResult& result) {
  std::vector<std::vector<int64_t>> ids;
  for (const auto& s : result.sequences) ids.push_back(s.token_ids);
  return ids;
}

TEST_CASE("parity: blip2 generate --ids prints transformers' new ids for every run") {
  const std::vector<FixtureModel> models = DiscoverModels(FixturesDir());
  int runs = 0, end_to_end = 0;
  for (const CaseFolder& folder : DiscoverCaseFolders(FixturesDir())) {
    const std::string& dir = folder.dir;
    const engine::ModelSpec* spec = &folder.spec;
    const int64_t pad = ReturnedPadId(*spec);
    auto library = engine::Captioner::Load({dir});
    REQUIRE(library.ok());
    for (const auto& [name, c] : folder.reference["cases"].items()) {
      const size_t prompt_len = NewIdsStart(*spec, c);
      const std::string image = c["image"].get<std::string>();
      const std::vector<float> decoded = DecodeAndPreprocess(FindImage(FixturesDir(), image), spec->image_processor);
      const std::vector<float> reference = ReferencePixels(models, image, dir);
      auto generate = [&](const std::vector<float>& pixels, const engine::GenerationOverrides& o) {
        auto result = (*library)->Generate({pixels, c["prompt"].get<std::string>(), o});
        REQUIRE(result.ok());
        return *result;
      };
      for (const auto& run : c.contains("generate") ? c["generate"] : json::array()) {
        std::vector<std::string> args = BaseArgs(dir, c);
        AddKwargFlags(run["kwargs"], *spec, &args);
        args.push_back("--ids");
        INFO(absl::StrJoin(args, " "));
        const ProcessResult r = RunProcess(args);
        REQUIRE(r.exit_code == 0);
        const auto got = ParseIdLines(r.out);
        const auto want = run["sequences"].get<std::vector<std::vector<int64_t>>>();
        // transformers' rows as we return them: new ids only, shorter rows unpadded.
        auto as_transformers = [&](const std::vector<std::vector<int64_t>>& ours) {
          if (ours.size() != want.size()) return false;
          for (size_t i = 0; i < ours.size(); ++i) {
            std::vector<int64_t> row(want[i].begin() + static_cast<std::ptrdiff_t>(prompt_len), want[i].end());
            while (row.size() > ours[i].size() && row.back() == pad) row.pop_back();
            if (row != ours[i]) return false;
          }
          return true;
        };
        const auto from_reference = Ids(generate(reference, OverridesFromKwargs(run["kwargs"])));
        const auto from_decoded = Ids(generate(decoded, OverridesFromKwargs(run["kwargs"])));
        CHECK(got == from_decoded);
        CHECK(as_transformers(from_reference));
        if (from_decoded == from_reference) CHECK(as_transformers(got));
        if (as_transformers(got)) ++end_to_end;
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
        engine::GenerationOverrides o;
        o.max_new_tokens = static_cast<int64_t>(steps);
        const engine::CaptionResult from_decoded = generate(decoded, o);
        CHECK(r.out == from_decoded.sequences[0].text + "\n");
        if (from_decoded.sequences[0].token_ids == generate(reference, o).sequences[0].token_ids) {
          // transformers' decode keeps a stop token that is not special (the
          // newline OPT checkpoints stop on); the command leaves it out.
          std::string want = c["decoded_greedy"].get<std::string>();
          const auto greedy = c.contains("greedy_manual_new") ? c["greedy_manual_new"].get<std::vector<int64_t>>()
                                                              : std::vector<int64_t>{};
          const auto& stops = spec->generation.eos_token_id;
          if (!greedy.empty() && std::find(stops.begin(), stops.end(), greedy.back()) != stops.end()) {
            const auto stop_text = (*library)->tokenizer().Decode({greedy.back()}, /*skip_special_tokens=*/true);
            REQUIRE(stop_text.ok());
            REQUIRE(absl::EndsWith(want, *stop_text));
            want.resize(want.size() - stop_text->size());
          }
          CHECK(r.out == want + "\n");
        }
      }
    }
  }
  std::printf("PARITY blip2 generate --ids: %d runs compared, %d equal to transformers' ids from the image file\n",
              runs, end_to_end);
  CHECK(runs > 0);
}

}  // namespace
}  // namespace blip2::testing
