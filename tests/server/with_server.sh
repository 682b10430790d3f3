#!/usr/bin/env bash
# Runs COMMAND against a real `blip2 serve` on free ports, then stops the server
# with SIGTERM. Passes when COMMAND passes and the server exits 0.
# Usage: with_server.sh BLIP2 CONFIG COMMAND...
# BLIP2_SERVE_ARGS (optional) adds flags to `blip2 serve`.
# COMMAND sees BLIP2_TARGET (host:port), BLIP2_METRICS_URL and BLIP2_HTTP_URL
# (the OpenAI-compatible API's base, http://host:port/v1).
set -euo pipefail
blip2=$1
config=$2
shift 2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# shellcheck disable=SC2086  # BLIP2_SERVE_ARGS is a list of flags
"$blip2" serve --config "$config" ${BLIP2_SERVE_ARGS:-} --port 0 --metrics_port 0 --http_port 0 --port_file "$dir/ports" --log_level warn &
pid=$!
for _ in $(seq 600); do
  [ -s "$dir/ports" ] && break
  kill -0 "$pid" 2>/dev/null || { echo "the server exited before listening" >&2; exit 1; }
  sleep 0.1
done
read -r port metrics_port http_port < "$dir/ports"
export BLIP2_TARGET="127.0.0.1:$port" BLIP2_METRICS_URL="http://127.0.0.1:$metrics_port/metrics"
export BLIP2_HTTP_URL="http://127.0.0.1:$http_port/v1"
set +e
"$@"
rc=$?
kill -TERM "$pid"
wait "$pid"
server_rc=$?
set -e
echo "command exit $rc, server exit $server_rc"
[ "$rc" -eq 0 ] && [ "$server_rc" -eq 0 ]
