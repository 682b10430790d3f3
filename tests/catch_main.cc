// Catch2's main, compiled once (it is the slowest file to build).
#if __has_include(<catch2/catch_all.hpp>)
#include <catch2/catch_all.hpp>  // v3 ships its own main library; see tests/CMakeLists.txt
#else
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
#endif
