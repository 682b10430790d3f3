// Typed access to the fields of a JSON object (a Hugging Face config file) with
// transformers-style defaults. The first problem met (wrong type, missing
// required field) is remembered with the field's full path, so that parsing code
// reads top-down and checks one status at the end.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include <nlohmann/json.hpp>

namespace blip2::common {

class JsonFields {
 public:
  // `file` names the source in errors ("/m/config.json"); `path` is the object's
  // dotted path inside it ("vision_config"), empty for the top level.
  JsonFields(const nlohmann::json& object, std::string file, std::string path = "");

  bool Has(const std::string& key) const;
  // Present and not null.
  bool HasValue(const std::string& key) const;

  int64_t Int(const std::string& key, int64_t fallback);
  double Double(const std::string& key, double fallback);
  bool Bool(const std::string& key, bool fallback);
  std::string String(const std::string& key, const std::string& fallback);
  std::vector<double> DoubleList(const std::string& key, std::vector<double> fallback);
  // An int or a list of ints (as `eos_token_id` may be); null or absent gives `fallback`.
  std::vector<int64_t> IntOrIntList(const std::string& key, std::vector<int64_t> fallback);
  // An int that may be null or absent.
  std::optional<int64_t> OptionalInt(const std::string& key);

  int64_t RequiredInt(const std::string& key);
  std::string RequiredString(const std::string& key);

  // A nested object; an empty object when absent or null (a wrong type is an error).
  JsonFields Object(const std::string& key);
  const nlohmann::json& json() const { return object_; }

  // A problem found by the caller (a value out of range), reported like the others.
  void Fail(const std::string& key, const std::string& problem);

  // OK, or INVALID_ARGUMENT naming the first bad field (nested objects included).
  absl::Status status() const;

 private:
  const nlohmann::json* Find(const std::string& key) const;
  void TypeError(const std::string& key, const char* expected, const nlohmann::json& got);

  const nlohmann::json& object_;
  std::string Where(const std::string& key) const;

  std::string file_;
  std::string path_;
  std::shared_ptr<absl::Status> first_error_;  // shared with nested objects
};

}  // namespace blip2::common
