// The server's version, reported by GetModelInfo and `blip2 --version`.
#pragma once

namespace blip2::server {

inline constexpr char kServerVersion[] = "0.4.0";

}  // namespace blip2::server
