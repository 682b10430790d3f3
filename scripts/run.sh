#!/usr/bin/env bash
# The main job from a fresh clone: install, build, then caption an image and
# answer a question with the bundled tiny model (random weights: the text is
# noise, but it is exactly the text transformers produces for this checkpoint).
# (The server issue replaces this with the gRPC server plus a client call.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh build
model=tests/fixtures/blip2-tiny-opt
echo "== caption"
build/server/blip2 generate --model $model --image tests/fixtures/images/chelsea.jpg
echo "== question"
build/server/blip2 generate --model $model --image tests/fixtures/images/coffee.jpg \
  --question "what is in the cup?" --max-new-tokens 8
echo "== image embeddings"
build/server/blip2 encode --model $model --image tests/fixtures/images/chelsea.jpg
