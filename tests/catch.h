// The one place that picks the Catch2 header: Debian ships Catch2 v2, the GPU
// machine Catch2 v3.
#pragma once

#if __has_include(<catch2/catch_all.hpp>)
#include <catch2/catch_all.hpp>
#else
#include <catch2/catch.hpp>
#endif
