#!/usr/bin/env bash
# One GPU session, one call (at most 8 minutes):
#  1. build the engine against the GPU machine's LibTorch with CUDA;
#  2. write a random-weight checkpoint of the full blip2-opt-2.7b shape with
#     transformers' save_pretrained (float16, local disk), so both sides below
#     load the very same weights;
#  3. run the tests on CUDA (parity: float32 against the fixtures; float16 and
#     bfloat16 against our float32, greedy ids included);
#  4. measure our engine (image path at batch 1..64, generation at batch 1, 8
#     and 64, the engine under load) and transformers (generate at batch 1, 8,
#     64; the image path at 64) on that checkpoint, same workload: greedy
#     captions, exactly 32 new tokens;
#     and 5,000 more captions watching host and device memory (no growth);
#  5. print one table and write benchmarks/results/gpu-<gpu>.json
#     (benchmarks/gpu/report.py), plus every raw JSON.
#
# Prepare on the CPU machine: bash benchmarks/gpu/prepare.sh
# Device call: carry [".gpu"], command: bash benchmarks/gpu/run.sh
# Results land in $OUT (the device tool) or benchmarks/results/ (elsewhere).
#
# BLIP2_GPU_SMOKE=1 runs steps 2-5 on this CPU with the tiny shape (float32,
# few iterations, the existing build/), to check the script before spending
# GPU time. BLIP2_GPU_BUILD_ONLY=1 stops after step 1.
set -uo pipefail
cd "$(dirname "$0")/../.."
smoke=${BLIP2_GPU_SMOKE:-0}
out=${OUT:-benchmarks/results}
mkdir -p "$out"
runs=$(mktemp -d)
log="$out/gpu_run.log"
exec > >(tee "$log") 2>&1
start=$(date +%s)
step() { echo; echo "== $* ($(( $(date +%s) - start )) s)"; }

if [[ $smoke == 1 ]]; then
  device=cpu dtype=float32 shape=tiny build=build iters=2 concurrency=8,32 batches=1,8 soak=2000 kv_mb=64
  model=$runs/checkpoint
else
  device=cuda dtype=float16 shape=opt-2.7b build=build-gpu iters=5 concurrency=64,128,256 batches=1,8,64 soak=5000
  kv_mb=20000
  model=/tmp/blip2-opt-2.7b-random

  step "machine"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"

  step "unpack carried packages"
  prefix=$PWD/.gpu/root
  mkdir -p "$prefix"
  for deb in .gpu/debs/*.deb; do dpkg -x "$deb" "$prefix"; done
  export LD_LIBRARY_PATH=$prefix/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}

  step "configure and build (engine only, CUDA)"
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DBLIP2_ENGINE_ONLY=ON -DBLIP2_CUDA=ON \
    -DCMAKE_PREFIX_PATH="$prefix/usr" || exit 1
  ninja -C build-gpu -j16 || exit 1
  [[ ${BLIP2_GPU_BUILD_ONLY:-0} == 1 ]] && { echo "build only: done"; exit 0; }
fi

step "checkpoint: random $shape weights through transformers save_pretrained ($dtype)"
[[ -f $model/config.json ]] || python3 benchmarks/gpu/make_checkpoint.py "$model" --shape "$shape" \
  --dtype "$( [[ $dtype == float32 ]] && echo float32 || echo float16 )" || exit 1

tests_rc=0
if [[ $smoke != 1 ]]; then
  step "tests on CUDA (parity: float32 vs fixtures, float16/bfloat16 vs float32)"
  BLIP2_TEST_DEVICE=cuda ctest --test-dir build-gpu --output-on-failure -j4
  tests_rc=$?
  BLIP2_TEST_DEVICE=cuda build-gpu/tests/image_path_parity_tests 2>&1 | grep PARITY > "$out/gpu_parity.txt"
fi

common=(--model "$model" --skip-tiny --skip-synthetic --device "$device" --dtype "$dtype")
step "ours: image path, batch 1, 8, 32, 64"
"$build/benchmarks/image_path_bench" "${common[@]}" --batches 1,8,32,64 --iters "$iters" --out "$runs/image_path.json"
for batch in ${batches//,/ }; do
  [[ $batch == 1 ]] && continue  # batch-1 figures come with every run
  step "ours: generation at batch $batch, 32 new tokens"
  "$build/benchmarks/generation_bench" "${common[@]}" --new-tokens 32 --batch "$batch" --iters "$iters" \
    --out "$runs/generation_b$batch.json"
done
step "ours: the engine under load, 512 captions at $concurrency concurrent, then $soak more (memory)"
"$build/benchmarks/engine_bench" --load-only --model "$model" --device "$device" --dtype "$dtype" --requests 512 \
  --concurrency "$concurrency" --new-tokens 32 --kv-cache-mb "$kv_mb" --soak "$soak" --out "$runs/engine_load.json"
step "transformers: generate and the image path on the same checkpoint"
python3 benchmarks/gpu/hf_caption_bench.py "$model" "$runs/transformers.json" --device "$device" --dtype "$dtype" \
  --batches "$batches" --new-tokens 32 --iters "$iters" || exit 1

step "report"
gpu=$(python3 -c "import json; print(json.load(open('$runs/transformers.json')).get('gpu', 'cpu-smoke'))" | tr ' A-Z' '-a-z')
cp "$runs"/*.json "$out/" 2>/dev/null
python3 benchmarks/gpu/report.py "$runs" "$out/gpu-$gpu.json"
step "done (tests exit code $tests_rc)"
rm -rf "$runs"
exit $tests_rc
