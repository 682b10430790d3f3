// Error-propagation helpers for absl::Status / absl::StatusOr, in the style of
// Triton's RETURN_IF_ERROR: errors are values across every boundary.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define BLIP2_CONCAT_INNER_(a, b) a##b
#define BLIP2_CONCAT_(a, b) BLIP2_CONCAT_INNER_(a, b)

// Returns from the enclosing function when `expr` (an absl::Status) is not OK.
#define RETURN_IF_ERROR(expr)                 \
  do {                                        \
    ::absl::Status blip2_status_ = (expr);    \
    if (!blip2_status_.ok()) return blip2_status_; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, MakeX());` binds the value or returns the error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(BLIP2_CONCAT_(blip2_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(tmp).value()
