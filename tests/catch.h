// The one place that picks the Catch2 header: Debian ships Catch2 v2, the GPU
// machine Catch2 v3 (whose Approx lives in namespace Catch only, and whose
// substring matcher is Matchers::ContainsSubstring).
#pragma once

#include <string>

#if __has_include(<catch2/catch_all.hpp>)
#include <catch2/catch_all.hpp>
using Catch::Approx;
namespace Catch {
inline Matchers::StringContainsMatcher Contains(const std::string& text) { return Matchers::ContainsSubstring(text); }
}  // namespace Catch
#else
#include <catch2/catch.hpp>
#endif
