#!/usr/bin/env bash
# The main job from a fresh clone: install, build, encode a fixture image with
# the bundled tiny model. (The server issue replaces this with the gRPC server
# plus a client call that prints a caption.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh build
build/server/blip2 encode --model tests/fixtures/blip2-tiny-opt \
  --image tests/fixtures/images/chelsea.jpg --image tests/fixtures/images/camera_gray.png
