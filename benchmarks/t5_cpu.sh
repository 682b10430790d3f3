#!/usr/bin/env bash
# Flan-T5 on this CPU: the tiny fixture (and the tiny OPT beside it, same
# settings) and a random checkpoint of the full blip2-flan-t5-xl shape: ms per
# token at batch 1 (the engine's ms per step with one request) and tokens/s
# with 8 and 32 concurrent requests (distinct images, so every request runs
# the vision encoder, the T5 encoder and the decoder). Writes
# benchmarks/results/t5_cpu.json.
#   bash benchmarks/t5_cpu.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bench() {  # label model new_tokens "requests:concurrency ..."
  local label=$1 model=$2 tokens=$3 i=0
  for level in $4; do
    "$build/benchmarks/engine_bench" --load-only --model "$model" --requests "${level%%:*}" \
      --concurrency "${level##*:}" --new-tokens "$tokens" --kv-cache-mb 1024 --out "$tmp/$label-$((i++)).json"
  done
}
bench tiny-opt tests/fixtures/blip2-tiny-opt 32 "64:1 256:8 256:32"
bench tiny-flan-t5 tests/fixtures/blip2-tiny-flan-t5 32 "64:1 256:8 256:32"
xl=${BLIP2_T5_XL_DIR:-/tmp/blip2-flan-t5-xl-random}
[[ -f $xl/.done ]] || { rm -rf "$xl"; python3 benchmarks/gpu/make_checkpoint.py "$xl" --shape flan-t5-xl \
  --dtype bfloat16 && touch "$xl/.done"; }
# float32 on the CPU: the weights are stored bfloat16 and widened at load (15.5 GB).
bench flan-t5-xl-shape "$xl" 16 "2:1 8:8 32:32"
python3 benchmarks/t5_cpu_summary.py benchmarks/results/t5_cpu.json "$tmp"/*.json
