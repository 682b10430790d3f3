// A small Prometheus registry and its text exposition format (version 0.0.4):
// counters, gauges and histograms with labels. Thread-safe: families may be
// updated from any thread, including the engine thread (one short lock).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace blip2::server {

using LabelValues = std::vector<std::string>;

class MetricFamily {
 public:
  MetricFamily(std::string name, std::string help, std::string type, std::vector<std::string> label_names)
      : name_(std::move(name)), help_(std::move(help)), type_(std::move(type)), label_names_(std::move(label_names)) {}
  virtual ~MetricFamily() = default;
  // Appends "# HELP", "# TYPE" and every series.
  void Render(std::string* out) const;

 protected:
  // The series lines, under the family's lock.
  virtual void RenderSeries(std::string* out) const = 0;
  std::string Labels(const LabelValues& values, const std::string& extra_name = "",
                     const std::string& extra_value = "") const;
  const std::string name_;
  mutable std::mutex mu_;

 private:
  const std::string help_, type_;
  const std::vector<std::string> label_names_;
};

// Counters and gauges: one number per label set.
class ScalarFamily : public MetricFamily {
 public:
  using MetricFamily::MetricFamily;
  void Add(const LabelValues& labels, double delta = 1);
  // Gauges; also counters mirrored from a source that keeps its own totals.
  void Set(const LabelValues& labels, double value);
  double Get(const LabelValues& labels) const;

 private:
  void RenderSeries(std::string* out) const override;
  std::map<LabelValues, double> values_;
};

class Histogram : public MetricFamily {
 public:
  // `bounds`: upper bounds of the buckets, increasing (+Inf is implicit).
  Histogram(std::string name, std::string help, std::vector<std::string> label_names, std::vector<double> bounds);
  void Observe(const LabelValues& labels, double value);
  // Replaces a series with `count` observations of each value (for sources
  // that keep their own exact counts).
  void SetFromCounts(const LabelValues& labels, const std::map<double, int64_t>& counts);
  int64_t Count(const LabelValues& labels) const;

 private:
  struct Series {
    std::vector<int64_t> buckets;  // per bound, not cumulative; last is +Inf
    double sum = 0;
    int64_t count = 0;
  };
  void AddLocked(Series& s, double value, int64_t n);
  void RenderSeries(std::string* out) const override;
  const std::vector<double> bounds_;
  std::map<LabelValues, Series> series_;
};

class MetricsRegistry {
 public:
  ScalarFamily& Counter(const std::string& name, const std::string& help, std::vector<std::string> labels = {});
  ScalarFamily& Gauge(const std::string& name, const std::string& help, std::vector<std::string> labels = {});
  Histogram& AddHistogram(const std::string& name, const std::string& help, std::vector<std::string> labels,
                          std::vector<double> bounds);
  // Runs before every Render, e.g. to copy a component's gauges.
  void OnCollect(std::function<void()> collect);
  // The whole registry in the text exposition format.
  std::string Render() const;

 private:
  std::vector<std::unique_ptr<MetricFamily>> families_;
  std::vector<std::function<void()>> collectors_;
};

// Bounds growing by `factor` from `start`, `count` of them.
std::vector<double> ExponentialBounds(double start, double factor, int count);

}  // namespace blip2::server
