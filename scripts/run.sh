#!/usr/bin/env bash
# The main job from a fresh clone: install, build, start the gRPC server on the
# demo model, then caption images and answer questions through the C++ and
# Python clients and the OpenAI-compatible HTTP API, and stop the server with
# SIGTERM.
# The demo model is a tiny BLIP-2 trained here on a synthetic world of shapes
# (scripts/train_demo_model.py, docs/demo_model.md); the images below were drawn
# by that script and never trained on. Each answer is followed by what the
# scene really holds, so right and wrong are plain to see.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh build

ports=$(mktemp)
rm -f "$ports"
build/server/blip2 serve --config configs/shapes-opt-cpu.textproto --port 0 --metrics_port 0 --http_port 0 \
  --port_file "$ports" &
server=$!
trap 'kill -TERM $server 2>/dev/null || true; rm -f "$ports"' EXIT
for _ in $(seq 600); do [ -s "$ports" ] && break; sleep 0.1; done
read -r port metrics_port http_port < "$ports"
target=127.0.0.1:$port

images=tests/fixtures/images
truth() {  # image stem, then "caption" or a question index: what the scene really holds
  /usr/bin/python3 - tests/fixtures/blip2-shapes-opt/demo_images.json "$@" <<'PY'
import json, sys
scene = json.load(open(sys.argv[1]))[sys.argv[2]]
print(scene["caption"] if sys.argv[3] == "caption" else scene["qa"][int(sys.argv[3])]["question" if len(sys.argv) > 4 else "answer"])
PY
}

echo "== caption of $images/shapes_0.png (blip2 client caption, over gRPC)"
build/server/blip2 client caption --target "$target" --image $images/shapes_0.png
echo "   the scene: $(truth shapes_0 caption)"
question=$(truth shapes_0 0 question)
echo "== \"$question\" about shapes_0.png (blip2 client answer)"
build/server/blip2 client answer --target "$target" --image $images/shapes_0.png --question "$question"
echo "   right answer: $(truth shapes_0 0)"
echo "== caption of shapes_1.png (Python client)"
/usr/bin/python3 clients/python/blip2_client.py --target "$target" caption $images/shapes_1.png
echo "   the scene: $(truth shapes_1 caption)"
question=$(truth shapes_2 0 question)
echo "== \"$question\" about shapes_2.png (POST http://127.0.0.1:$http_port/v1/chat/completions, the image as a data: URL)"
/usr/bin/python3 - "http://127.0.0.1:$http_port/v1/chat/completions" $images/shapes_2.png "$question" <<'PY'
import base64, json, sys, urllib.request
image = base64.b64encode(open(sys.argv[2], "rb").read()).decode()
body = {"model": "blip2-shapes-opt", "max_tokens": 8, "messages": [{"role": "user", "content": [
    {"type": "image_url", "image_url": {"url": "data:image/png;base64," + image}},
    {"type": "text", "text": sys.argv[3]}]}]}
request = urllib.request.Request(sys.argv[1], json.dumps(body).encode(), {"content-type": "application/json"})
print(json.load(urllib.request.urlopen(request))["choices"][0]["message"]["content"])
PY
echo "   right answer: $(truth shapes_2 0)"
echo "== metrics (http://127.0.0.1:$metrics_port/metrics, excerpt)"
/usr/bin/python3 -c "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())" \
  "http://127.0.0.1:$metrics_port/metrics" | grep -E '^blip2_(requests_total|generated_tokens_total)'
kill -TERM $server
wait $server
trap - EXIT
rm -f "$ports"
echo "== server drained and exited 0"
