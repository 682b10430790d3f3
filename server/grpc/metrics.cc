#include "server/grpc/metrics.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace blip2::server {
namespace {

// Integers print exactly; other values with full precision.
std::string Number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return absl::StrCat(static_cast<int64_t>(v));
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.15g", v);  // short where it round-trips
  if (std::strtod(buf, nullptr) != v) std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

std::string EscapeLabel(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

}  // namespace

void MetricFamily::Render(std::string* out) const {
  absl::StrAppend(out, "# HELP ", name_, " ", help_, "\n# TYPE ", name_, " ", type_, "\n");
  std::lock_guard<std::mutex> lock(mu_);
  RenderSeries(out);
}

std::string MetricFamily::Labels(const LabelValues& values, const std::string& extra_name,
                                 const std::string& extra_value) const {
  std::string out;
  for (size_t i = 0; i < label_names_.size() && i < values.size(); ++i) {
    absl::StrAppend(&out, out.empty() ? "" : ",", label_names_[i], "=\"", EscapeLabel(values[i]), "\"");
  }
  if (!extra_name.empty()) absl::StrAppend(&out, out.empty() ? "" : ",", extra_name, "=\"", extra_value, "\"");
  return out.empty() ? "" : "{" + out + "}";
}

void ScalarFamily::Add(const LabelValues& labels, double delta) {
  std::lock_guard<std::mutex> lock(mu_);
  values_[labels] += delta;
}

void ScalarFamily::Set(const LabelValues& labels, double value) {
  std::lock_guard<std::mutex> lock(mu_);
  values_[labels] = value;
}

double ScalarFamily::Get(const LabelValues& labels) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = values_.find(labels);
  return it == values_.end() ? 0 : it->second;
}

void ScalarFamily::RenderSeries(std::string* out) const {
  for (const auto& [labels, value] : values_) absl::StrAppend(out, name_, Labels(labels), " ", Number(value), "\n");
}

Histogram::Histogram(std::string name, std::string help, std::vector<std::string> label_names,
                     std::vector<double> bounds)
    : MetricFamily(std::move(name), std::move(help), "histogram", std::move(label_names)), bounds_(std::move(bounds)) {}

void Histogram::AddLocked(Series& s, double value, int64_t n) {
  if (s.buckets.empty()) s.buckets.assign(bounds_.size() + 1, 0);
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  s.buckets[i] += n;
  s.sum += value * static_cast<double>(n);
  s.count += n;
}

void Histogram::Observe(const LabelValues& labels, double value) {
  std::lock_guard<std::mutex> lock(mu_);
  AddLocked(series_[labels], value, 1);
}

void Histogram::SetFromCounts(const LabelValues& labels, const std::map<double, int64_t>& counts) {
  std::lock_guard<std::mutex> lock(mu_);
  Series& s = series_[labels];
  s = Series();
  s.buckets.assign(bounds_.size() + 1, 0);
  for (const auto& [value, n] : counts) AddLocked(s, value, n);
}

int64_t Histogram::Count(const LabelValues& labels) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = series_.find(labels);
  return it == series_.end() ? 0 : it->second.count;
}

void Histogram::RenderSeries(std::string* out) const {
  for (const auto& [labels, s] : series_) {
    int64_t cumulative = 0;
    for (size_t i = 0; i <= bounds_.size(); ++i) {
      cumulative += s.buckets[i];
      const std::string le = i < bounds_.size() ? Number(bounds_[i]) : "+Inf";
      absl::StrAppend(out, name_, "_bucket", Labels(labels, "le", le), " ", cumulative, "\n");
    }
    absl::StrAppend(out, name_, "_sum", Labels(labels), " ", Number(s.sum), "\n");
    absl::StrAppend(out, name_, "_count", Labels(labels), " ", s.count, "\n");
  }
}

ScalarFamily& MetricsRegistry::Counter(const std::string& name, const std::string& help,
                                       std::vector<std::string> labels) {
  families_.push_back(std::make_unique<ScalarFamily>(name, help, "counter", std::move(labels)));
  return static_cast<ScalarFamily&>(*families_.back());
}

ScalarFamily& MetricsRegistry::Gauge(const std::string& name, const std::string& help,
                                     std::vector<std::string> labels) {
  families_.push_back(std::make_unique<ScalarFamily>(name, help, "gauge", std::move(labels)));
  return static_cast<ScalarFamily&>(*families_.back());
}

Histogram& MetricsRegistry::AddHistogram(const std::string& name, const std::string& help,
                                         std::vector<std::string> labels, std::vector<double> bounds) {
  families_.push_back(std::make_unique<Histogram>(name, help, std::move(labels), std::move(bounds)));
  return static_cast<Histogram&>(*families_.back());
}

void MetricsRegistry::OnCollect(std::function<void()> collect) { collectors_.push_back(std::move(collect)); }

std::string MetricsRegistry::Render() const {
  for (const auto& collect : collectors_) collect();
  std::string out;
  for (const auto& family : families_) family->Render(&out);
  return out;
}

std::vector<double> ExponentialBounds(double start, double factor, int count) {
  std::vector<double> bounds;
  for (double b = start; static_cast<int>(bounds.size()) < count; b *= factor) bounds.push_back(b);
  return bounds;
}

}  // namespace blip2::server
