#!/usr/bin/env bash
# The main job from a fresh clone: install, build, start the gRPC server on the
# bundled tiny model, then caption a fixture image (and answer a question)
# through the C++ and Python clients and the OpenAI-compatible HTTP API, and
# stop the server with SIGTERM.
# The tiny model has random weights: the text is noise, but it is exactly the
# text transformers produces for this checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh build

ports=$(mktemp)
rm -f "$ports"
build/server/blip2 serve --config configs/tiny-opt-cpu.textproto --port 0 --metrics_port 0 --http_port 0 \
  --port_file "$ports" &
server=$!
trap 'kill -TERM $server 2>/dev/null || true; rm -f "$ports"' EXIT
for _ in $(seq 600); do [ -s "$ports" ] && break; sleep 0.1; done
read -r port metrics_port http_port < "$ports"
target=127.0.0.1:$port

echo "== caption (blip2 client caption, over gRPC)"
build/server/blip2 client caption --target "$target" --image tests/fixtures/images/chelsea.jpg
echo "== question (blip2 client answer)"
build/server/blip2 client answer --target "$target" --image tests/fixtures/images/coffee.jpg \
  --question "what is in the cup?" --max-new-tokens 8
echo "== caption (Python client)"
/usr/bin/python3 clients/python/blip2_client.py --target "$target" caption tests/fixtures/images/chelsea.jpg
echo "== caption (POST http://127.0.0.1:$http_port/v1/chat/completions, the image as a data: URL)"
/usr/bin/python3 - "http://127.0.0.1:$http_port/v1/chat/completions" tests/fixtures/images/chelsea.jpg <<'PY'
import base64, json, sys, urllib.request
image = base64.b64encode(open(sys.argv[2], "rb").read()).decode()
body = {"model": "blip2-tiny-opt", "max_tokens": 8, "messages": [{"role": "user", "content": [
    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + image}}]}]}
request = urllib.request.Request(sys.argv[1], json.dumps(body).encode(), {"content-type": "application/json"})
print(json.load(urllib.request.urlopen(request))["choices"][0]["message"]["content"])
PY
echo "== metrics (http://127.0.0.1:$metrics_port/metrics, excerpt)"
/usr/bin/python3 -c "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())" \
  "http://127.0.0.1:$metrics_port/metrics" | grep -E '^blip2_(requests_total|generated_tokens_total)'
kill -TERM $server
wait $server
trap - EXIT
rm -f "$ports"
echo "== server drained and exited 0"
