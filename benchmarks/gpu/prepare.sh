#!/usr/bin/env bash
# Run on the CPU machine before a GPU session: fetches the Debian packages the GPU
# machine lacks (abseil; spdlog, fmt, nlohmann-json and Catch2 so the build uses
# the same versions as here) into .gpu/debs, which the device call carries.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .gpu/debs
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
cd .gpu/debs
apt-get download libabsl-dev libabsl20220623 libspdlog-dev libspdlog1.10 libfmt-dev libfmt9 nlohmann-json3-dev catch2
ls -la
