#include "common/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace blip2::common {
namespace {

std::shared_ptr<spdlog::logger> Logger(const std::string& component) {
  auto logger = spdlog::get(component);
  if (logger == nullptr) {
    try {
      logger = spdlog::stderr_color_mt(component);
    } catch (const spdlog::spdlog_ex&) {  // created meanwhile by another thread
      logger = spdlog::get(component);
    }
  }
  return logger;
}

}  // namespace

void LogInfo(const std::string& component, const std::string& message) { Logger(component)->info("{}", message); }

void LogWarning(const std::string& component, const std::string& message) {
  Logger(component)->warn("{}", message);
}

}  // namespace blip2::common
