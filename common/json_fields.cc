#include "common/json_fields.h"

#include <cmath>
#include <memory>

#include "absl/strings/str_cat.h"

namespace blip2::common {
namespace {

const nlohmann::json& EmptyObject() {
  static const nlohmann::json* empty = new nlohmann::json(nlohmann::json::object());
  return *empty;
}

bool IsIntegral(const nlohmann::json& v) {
  if (v.is_number_integer()) return true;
  if (v.is_number_float()) {
    const double d = v.get<double>();
    // Within int64 too: 3.2e55 is integral but no int64 (found by model_config_fuzz).
    return std::isfinite(d) && std::floor(d) == d && d >= -9223372036854775808.0 && d < 9223372036854775808.0;
  }
  return false;
}

}  // namespace

JsonFields::JsonFields(const nlohmann::json& object, std::string file, std::string path)
    : object_(object.is_object() ? object : EmptyObject()),
      file_(std::move(file)),
      path_(std::move(path)),
      first_error_(std::make_shared<absl::Status>()) {
  if (!object.is_object() && !object.is_null()) {
    *first_error_ = absl::InvalidArgumentError(
        absl::StrCat(file_, path_.empty() ? "" : ": ", path_, ": expected a JSON object, got ",
                     object.type_name()));
  }
}

std::string JsonFields::Where(const std::string& key) const {
  return path_.empty() ? key : absl::StrCat(path_, ".", key);
}

const nlohmann::json* JsonFields::Find(const std::string& key) const {
  auto it = object_.find(key);
  return it == object_.end() ? nullptr : &*it;
}

bool JsonFields::Has(const std::string& key) const { return Find(key) != nullptr; }

bool JsonFields::HasValue(const std::string& key) const {
  const auto* v = Find(key);
  return v != nullptr && !v->is_null();
}

void JsonFields::Fail(const std::string& key, const std::string& problem) {
  if (first_error_->ok()) {
    *first_error_ = absl::InvalidArgumentError(absl::StrCat(file_, ": ", Where(key), ": ", problem));
  }
}

void JsonFields::TypeError(const std::string& key, const char* expected, const nlohmann::json& got) {
  Fail(key, absl::StrCat("expected ", expected, ", got ", got.type_name(), " ", got.dump()));
}

int64_t JsonFields::Int(const std::string& key, int64_t fallback) {
  const auto* v = Find(key);
  if (v == nullptr || v->is_null()) return fallback;
  if (!IsIntegral(*v)) {
    TypeError(key, "an integer", *v);
    return fallback;
  }
  return v->is_number_integer() ? v->get<int64_t>() : static_cast<int64_t>(v->get<double>());
}

double JsonFields::Double(const std::string& key, double fallback) {
  const auto* v = Find(key);
  if (v == nullptr || v->is_null()) return fallback;
  if (!v->is_number()) {
    TypeError(key, "a number", *v);
    return fallback;
  }
  return v->get<double>();
}

bool JsonFields::Bool(const std::string& key, bool fallback) {
  const auto* v = Find(key);
  if (v == nullptr || v->is_null()) return fallback;
  if (!v->is_boolean()) {
    TypeError(key, "true or false", *v);
    return fallback;
  }
  return v->get<bool>();
}

std::string JsonFields::String(const std::string& key, const std::string& fallback) {
  const auto* v = Find(key);
  if (v == nullptr || v->is_null()) return fallback;
  if (!v->is_string()) {
    TypeError(key, "a string", *v);
    return fallback;
  }
  return v->get<std::string>();
}

std::vector<double> JsonFields::DoubleList(const std::string& key, std::vector<double> fallback) {
  const auto* v = Find(key);
  if (v == nullptr || v->is_null()) return fallback;
  if (v->is_number()) return {v->get<double>()};
  if (!v->is_array()) {
    TypeError(key, "a list of numbers", *v);
    return fallback;
  }
  std::vector<double> out;
  for (const auto& item : *v) {
    if (!item.is_number()) {
      TypeError(key, "a list of numbers", *v);
      return fallback;
    }
    out.push_back(item.get<double>());
  }
  return out;
}

std::vector<int64_t> JsonFields::IntOrIntList(const std::string& key, std::vector<int64_t> fallback) {
  const auto* v = Find(key);
  if (v == nullptr || v->is_null()) return fallback;
  if (IsIntegral(*v)) return {static_cast<int64_t>(v->get<double>())};
  if (!v->is_array()) {
    TypeError(key, "an integer or a list of integers", *v);
    return fallback;
  }
  std::vector<int64_t> out;
  for (const auto& item : *v) {
    if (!IsIntegral(item)) {
      TypeError(key, "an integer or a list of integers", *v);
      return fallback;
    }
    out.push_back(static_cast<int64_t>(item.get<double>()));
  }
  return out;
}

std::optional<int64_t> JsonFields::OptionalInt(const std::string& key) {
  if (!HasValue(key)) return std::nullopt;
  return Int(key, 0);
}

int64_t JsonFields::RequiredInt(const std::string& key) {
  if (!HasValue(key)) {
    Fail(key, "required field is missing");
    return 0;
  }
  return Int(key, 0);
}

std::string JsonFields::RequiredString(const std::string& key) {
  if (!HasValue(key)) {
    Fail(key, "required field is missing");
    return "";
  }
  return String(key, "");
}

JsonFields JsonFields::Object(const std::string& key) {
  const auto* v = Find(key);
  JsonFields nested(v != nullptr && v->is_object() ? *v : EmptyObject(), file_, Where(key));
  nested.first_error_ = first_error_;
  if (v != nullptr && !v->is_null() && !v->is_object()) TypeError(key, "a JSON object", *v);
  return nested;
}

absl::Status JsonFields::status() const { return *first_error_; }

}  // namespace blip2::common
