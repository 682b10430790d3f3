// Logging for code that must not include spdlog: LibTorch's include directory
// bundles its own (newer) fmt headers, which break spdlog's, so translation units
// that see torch headers log through these plain functions. Each component gets
// its own named spdlog logger, writing to stderr.
#pragma once

#include <string>

namespace blip2::common {

void LogInfo(const std::string& component, const std::string& message);
void LogWarning(const std::string& component, const std::string& message);

}  // namespace blip2::common
