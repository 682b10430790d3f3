#!/usr/bin/env bash
# The beam stall and the prefix cache through gRPC, on the bundled tiny OPT
# model (configs/tiny-opt-cpu.textproto): see beam_stall.cc.
# Writes benchmarks/results/beam_stall_cpu.json.
# Usage: bash benchmarks/beam_stall.sh [BUILD_DIR] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
rounds=${2:-5}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; [ -n "${server:-}" ] && kill -TERM $server 2>/dev/null || true' EXIT
"$build/server/blip2" serve --config configs/tiny-opt-cpu.textproto --port 0 --metrics_port 0 \
  --port_file "$tmp/ports" 2>"$tmp/server.log" &
server=$!
for _ in $(seq 600); do [ -s "$tmp/ports" ] && break; sleep 0.1; done
read -r port _ < "$tmp/ports"
"$build/benchmarks/beam_stall" --target "127.0.0.1:$port" --rounds "$rounds" --out benchmarks/results/beam_stall_cpu.json
