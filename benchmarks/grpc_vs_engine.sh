#!/usr/bin/env bash
# Throughput through gRPC against the engine alone, on the bundled tiny model:
# the same workload (closed loop, distinct images, 32 new tokens each) at 1, 8,
# 32 and 128 concurrent, measured by engine_bench --load-only (pixels straight
# into the engine) and by grpc_load against `blip2 serve` (JPEG bytes over
# gRPC, decoded and preprocessed by the server, tokens streamed back).
# The server runs configs/tiny-opt-cpu.textproto, which sets one torch thread;
# the engine alone runs with torch's default threads and with one thread, and
# the report compares against both. Rounds alternate the runs to spread
# machine noise; the best of the rounds per level counts.
# Writes benchmarks/results/grpc_load_cpu.json.
# Usage: bash benchmarks/grpc_vs_engine.sh [BUILD_DIR] [REQUESTS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
requests=${2:-1024}
rounds=${3:-3}
levels=1,8,32,128
out=benchmarks/results
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; [ -n "${server:-}" ] && kill -TERM $server 2>/dev/null || true' EXIT

"$build/server/blip2" serve --config configs/tiny-opt-cpu.textproto --port 0 --metrics_port 0 \
  --kv_cache.cache_mb 64 --port_file "$tmp/ports" 2>"$tmp/server.log" &
server=$!
for _ in $(seq 600); do [ -s "$tmp/ports" ] && break; sleep 0.1; done
read -r port _ < "$tmp/ports"

for r in $(seq "$rounds"); do
  echo "== round $r: engine alone, torch's default threads"
  "$build/benchmarks/engine_bench" --load-only --requests "$requests" --concurrency $levels --kv-cache-mb 64 \
    --out "$tmp/engine_$r.json" 2>/dev/null | grep -v '^wrote'
  echo "== round $r: engine alone, one torch thread"
  OMP_NUM_THREADS=1 "$build/benchmarks/engine_bench" --load-only --requests "$requests" --concurrency $levels \
    --kv-cache-mb 64 --out "$tmp/engine1_$r.json" 2>/dev/null | grep -v '^wrote'
  echo "== round $r: through gRPC"
  "$build/benchmarks/grpc_load" --target "127.0.0.1:$port" --concurrency $levels --requests "$requests" \
    --out "$tmp/grpc_$r.json" | grep -v '^wrote'
done
kill -TERM $server
wait $server
server=

/usr/bin/python3 - "$tmp" "$rounds" "$out/grpc_load_cpu.json" <<'PY'
import json, sys
tmp, rounds, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
best = {}
for r in range(1, rounds + 1):
    for name, key in (("engine", "engine_tokens_per_s"), ("engine1", "engine_1thread_tokens_per_s")):
        for row in json.load(open(f"{tmp}/{name}_{r}.json"))["results"]:
            e = best.setdefault(row["concurrent"], {"engine_tokens_per_s": 0, "engine_1thread_tokens_per_s": 0,
                                                    "grpc": None})
            e[key] = max(e[key], row["tokens_per_s"])
    grpc = json.load(open(f"{tmp}/grpc_{r}.json"))
    for row in grpc["results"]:
        e = best[int(row["concurrent"])]
        if e["grpc"] is None or row["tokens_per_s"] > e["grpc"]["tokens_per_s"]:
            e["grpc"] = row
rows = []
print(f"{'concurrent':>10} {'engine tok/s':>13} {'1 thread':>9} {'gRPC tok/s':>11} {'vs engine':>10} "
      f"{'vs 1 thread':>11} {'req/s':>8} {'ttft p50/p90/p99 ms':>21} {'itl p50/p90/p99 ms':>20} errors")
for c in sorted(best):
    e, e1, g = best[c]["engine_tokens_per_s"], best[c]["engine_1thread_tokens_per_s"], best[c]["grpc"]
    t, i = g["ttft_ms"], g["itl_ms"]
    print(f"{c:>10} {e:>13.0f} {e1:>9.0f} {g['tokens_per_s']:>11.0f} {g['tokens_per_s'] / e:>10.0%} "
          f"{g['tokens_per_s'] / e1:>11.0%} {g['requests_per_s']:>8.1f} "
          f"{t['p50']:>7.1f}/{t['p90']:.1f}/{t['p99']:.1f} {i['p50']:>8.2f}/{i['p90']:.2f}/{i['p99']:.2f} {g['errors']}")
    rows.append({"concurrent": c, "engine_tokens_per_s": e, "engine_1thread_tokens_per_s": e1, "grpc": g,
                 "grpc_over_engine": g["tokens_per_s"] / e, "grpc_over_engine_1thread": g["tokens_per_s"] / e1})
json.dump({"benchmark": "grpc_vs_engine", "model": "tests/fixtures/blip2-tiny-opt", "device": "cpu",
           "requests_per_level": grpc["results"][0]["requests"], "rounds": rounds, "new_tokens": 32,
           "image_size": grpc["image_size"], "results": rows}, open(path, "w"), indent=1)
print("wrote", path)
PY
