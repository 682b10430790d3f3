#!/usr/bin/env bash
# The whole test suite from a fresh clone: install, build, run every test through ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh build
ctest --test-dir build --output-on-failure -j2
