#!/usr/bin/env bash
# The OpenAI-compatible HTTP API against gRPC against the engine alone, on the
# bundled tiny model, at 1, 32, 256 and 1,000 concurrent streams (closed loop,
# distinct images, 32 new tokens each), with TLS off and on: captions/s, time
# to first token p50/p99, and the server's threads and resident memory
# (sampled from /proc every 100 ms while each level runs). The clients:
# engine_bench --load-only (pixels straight into an engine in-process),
# grpc_load (gRPC callback API) and http_load (Beast, one thread, SSE).
# Writes benchmarks/results/http_vs_grpc_cpu.json.
# Usage: bash benchmarks/http_vs_grpc.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
levels=(1 32 256 1000)
requests_for() { case $1 in 1) echo 200 ;; 32) echo 1000 ;; *) echo $(($1 * 3)) ;; esac; }
out=benchmarks/results
tmp=$(mktemp -d)
server=
trap 'rm -rf "$tmp"; [ -n "$server" ] && kill -TERM $server 2>/dev/null || true' EXIT
bash tests/server/make_test_certs.sh "$tmp/certs"

# The server as configs/tiny-opt-cpu.textproto has it, with room for 1,000
# streams in flight (admitted calls and queue).
start_server() {  # [TLS flags...]
  rm -f "$tmp/ports"
  "$build/server/blip2" serve --config configs/tiny-opt-cpu.textproto --port 0 --metrics_port 0 --http_port 0 \
    --limits.max_concurrent_streams 4096 --limits.max_queued_requests 4096 --log_level warn \
    --port_file "$tmp/ports" "$@" 2>>"$tmp/server.log" &
  server=$!
  for _ in $(seq 600); do [ -s "$tmp/ports" ] && break; sleep 0.1; done
  read -r grpc_port _ http_port < "$tmp/ports"
}
stop_server() { kill -TERM "$server"; wait "$server" || true; server=; }

# Runs a client command while sampling the server: prints "threads rss_mb".
sampled() {
  local samples="$tmp/samples"
  : > "$samples"
  ( while kill -0 "$server" 2>/dev/null; do
      awk '/^Threads:/ {t=$2} /^VmRSS:/ {r=$2} END {print t, r}' "/proc/$server/status" >> "$samples" 2>/dev/null || true
      sleep 0.1
    done ) &
  local sampler=$!
  "$@" > "$tmp/client.log" 2>&1 || { cat "$tmp/client.log"; kill $sampler; return 1; }
  kill $sampler 2>/dev/null; wait $sampler 2>/dev/null || true
  sort -n -k1 "$samples" | tail -1 | awk '{printf "%d", $1}'
  printf ' '
  sort -n -k2 "$samples" | tail -1 | awk '{printf "%.1f\n", $2 / 1024}'
}

rows="$tmp/rows.jsonl"
: > "$rows"
record() {  # front tls level json threads rss
  /usr/bin/python3 - "$@" >> "$rows" <<'PY'
import json, sys
front, tls, level, path, threads, rss = sys.argv[1:7]
r = json.load(open(path))["results"][0]
row = {"front": front, "tls": tls == "1", "concurrent": int(level),
       "captions_per_s": r.get("captions_per_s", r.get("requests_per_s")),
       "tokens_per_s": r["tokens_per_s"],
       "ttft_p50_ms": r["ttft_ms"]["p50"] if "ttft_ms" in r else r["ttft_p50_ms"],
       "ttft_p99_ms": r["ttft_ms"]["p99"] if "ttft_ms" in r else r["ttft_p99_ms"],
       "errors": r.get("errors", {}), "server_threads_max": int(threads) if threads != "-" else None,
       "server_rss_mb_max": float(rss) if rss != "-" else None, "requests": r["requests"]}
print(json.dumps(row))
PY
}

for level in "${levels[@]}"; do
  n=$(requests_for "$level")
  echo "== engine alone, $level concurrent, $n requests"
  OMP_NUM_THREADS=1 "$build/benchmarks/engine_bench" --load-only --requests "$n" --concurrency "$level" \
    --kv-cache-mb 64 --out "$tmp/engine.json" > "$tmp/client.log" 2>&1
  record engine 0 "$level" "$tmp/engine.json" - -
done

for tls in 0 1; do
  if [ "$tls" = 1 ]; then
    start_server --security.tls_cert_file "$tmp/certs/server.pem" --security.tls_key_file "$tmp/certs/server.key"
    grpc_flags=(--target "localhost:$grpc_port" --ca "$tmp/certs/ca.pem")
    http_flags=(--url "https://127.0.0.1:$http_port" --ca "$tmp/certs/ca.pem")
  else
    start_server
    grpc_flags=(--target "127.0.0.1:$grpc_port")
    http_flags=(--url "http://127.0.0.1:$http_port")
  fi
  for level in "${levels[@]}"; do
    n=$(requests_for "$level")
    echo "== TLS $tls, $level concurrent, $n requests: gRPC"
    read -r threads rss < <(sampled "$build/benchmarks/grpc_load" "${grpc_flags[@]}" --concurrency "$level" \
      --requests "$n" --out "$tmp/grpc.json")
    record grpc "$tls" "$level" "$tmp/grpc.json" "$threads" "$rss"
    echo "== TLS $tls, $level concurrent, $n requests: HTTP"
    read -r threads rss < <(sampled "$build/benchmarks/http_load" "${http_flags[@]}" --concurrency "$level" \
      --requests "$n" --out "$tmp/http.json")
    record http "$tls" "$level" "$tmp/http.json" "$threads" "$rss"
  done
  stop_server
done

/usr/bin/python3 - "$rows" "$out/http_vs_grpc_cpu.json" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{'front':>6} {'tls':>4} {'streams':>8} {'captions/s':>11} {'ttft p50':>9} {'ttft p99':>9} "
      f"{'threads':>8} {'RSS MB':>8} errors")
for r in rows:
    print(f"{r['front']:>6} {str(r['tls']):>4} {r['concurrent']:>8} {r['captions_per_s']:>11.1f} "
          f"{r['ttft_p50_ms']:>9.1f} {r['ttft_p99_ms']:>9.1f} {str(r['server_threads_max']):>8} "
          f"{str(r['server_rss_mb_max']):>8} {r['errors'] or ''}")
json.dump({"benchmark": "http_vs_grpc", "model": "tests/fixtures/blip2-tiny-opt", "device": "cpu",
           "config": "configs/tiny-opt-cpu.textproto", "new_tokens": 32, "image_size": 224,
           "client_threads": {"http_load": 1}, "results": rows}, open(sys.argv[2], "w"), indent=1)
print("wrote", sys.argv[2])
PY
