#!/usr/bin/env bash
# Configures and builds blip2-serve. Usage: scripts/build.sh [BUILD_DIR] [CMAKE_ARGS...]
# e.g. scripts/build.sh build-asan -DBLIP2_SANITIZE=ON
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build}
shift || true
cmake -S . -B "$build_dir" -G Ninja "$@" >/dev/null
ninja -C "$build_dir"
