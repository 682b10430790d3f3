#!/usr/bin/env bash
# One GPU session, one call (at most 8 minutes): build the engine against the GPU
# machine's LibTorch with CUDA, run the parity tests on CUDA (float32 against the
# fixtures; float16 and bfloat16 against our float32, greedy ids included), then
# time the full-size image path at batch 1, 8, 32, 64 in float16 and bfloat16,
# and generation with blip2-opt-2.7b's shape in float16 (ms per token at batch 1,
# tokens/s at batch 64, 32 new tokens) beside transformers on the same workload,
# and the engine under load (512 caption requests at 64, 128 and 256 concurrent).
#
# Prepare on the CPU machine: bash benchmarks/gpu/prepare.sh
# Device call: carry [".gpu"], command: bash benchmarks/gpu/run.sh
# Results land in $OUT (the device tool) or benchmarks/results/ (elsewhere).
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-benchmarks/results}
mkdir -p "$out"
log="$out/gpu_run.log"
exec > >(tee "$log") 2>&1
start=$(date +%s)
step() { echo; echo "== $* ($(( $(date +%s) - start )) s)"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

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

step "tests on CUDA (parity: float32 vs fixtures, float16/bfloat16 vs float32)"
BLIP2_TEST_DEVICE=cuda ctest --test-dir build-gpu --output-on-failure -j4
tests_rc=$?
BLIP2_TEST_DEVICE=cuda build-gpu/tests/image_path_parity_tests 2>&1 | grep PARITY > "$out/gpu_parity.txt"

step "benchmark: full-size image path"
for dtype in float16 bfloat16; do
  build-gpu/benchmarks/image_path_bench --device cuda --dtype "$dtype" --batches 1,8,32,64 --iters 10 \
    --out "$out/image_path_cuda_${dtype}.json"
done
step "benchmark: generation, blip2-opt-2.7b shape, float16"
build-gpu/benchmarks/generation_bench --device cuda --dtype float16 --new-tokens 32 --batch 64 --iters 3 \
  --skip-tiny --out "$out/generation_cuda_float16.json"
step "benchmark: the engine under load, 512 caption requests, blip2-opt-2.7b shape, float16"
build-gpu/benchmarks/engine_bench --load-only --synthetic --device cuda --dtype float16 --requests 512 \
  --concurrency 64,128,256 --new-tokens 32 --kv-cache-mb 20000 --out "$out/engine_cuda_float16.json"
step "baseline: transformers generate on the same workload"
python3 benchmarks/gpu/hf_generate_baseline.py "$out/generation_transformers_float16.json"
step "done (tests exit code $tests_rc)"
exit $tests_rc
