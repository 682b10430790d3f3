// The one place that picks the Catch2 header: Debian ships Catch2 v2 (also
// carried to the GPU machine, whose system has Catch2 v3). v2 wins when both
// are on the include path, since CMake links the Catch2 package it found.
#pragma once

#include <string>

#if __has_include(<catch2/catch.hpp>)
#include <catch2/catch.hpp>
#else
#include <catch2/catch_all.hpp>
using Catch::Approx;
namespace Catch {
inline Matchers::StringContainsMatcher Contains(const std::string& text) { return Matchers::ContainsSubstring(text); }
}  // namespace Catch
#endif
