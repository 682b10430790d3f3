// The one place that picks the Catch2 header: Debian ships Catch2 v2, the GPU
// machine Catch2 v3 (whose Approx lives in namespace Catch only).
#pragma once

#if __has_include(<catch2/catch_all.hpp>)
#include <catch2/catch_all.hpp>
using Catch::Approx;
#else
#include <catch2/catch.hpp>
#endif
