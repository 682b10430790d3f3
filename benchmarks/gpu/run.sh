#!/usr/bin/env bash
# A GPU session in one or two calls (15 minutes of device time in all):
#  1. build the engine against the GPU machine's LibTorch with CUDA, and
#     meanwhile write random-weight checkpoints of the full blip2-flan-t5-xl
#     (bfloat16) and blip2-opt-2.7b (float16) shapes with transformers'
#     save_pretrained (local disk, weights drawn on the GPU), so both sides
#     below load the very same weights;
#  2. run the tests on CUDA (parity: float32 against the fixtures; float16 and
#     bfloat16 against our float32, greedy ids included; the engine's batching
#     tests, OPT and T5; the demo model's held-out scenes captioned and answered
#     right in float32, float16 and bfloat16);
#  3. measure our engine and transformers on each checkpoint, same workload
#     (greedy captions, exactly 32 new tokens): generate at batch 1, 8, 64 and
#     our engine under load; for OPT also the image path and 5,000 more
#     captions watching host and device memory (no growth);
#  4. print one table per model and write benchmarks/results/gpu-<gpu>.json
#     (OPT, with [E]'s targets), gpu-<gpu>-flan-t5-xl.json and
#     gpu-<gpu>-itm-vit-g.json (retrieval: Embed and Match, [G])
#     (benchmarks/gpu/report.py), plus every raw JSON.
#
# BLIP2_GPU_PHASE: all (default), build (steps 1-2) or bench (steps 3-4, on
# the build and checkpoints a warm machine kept from a build call). Every
# measurement runs under `timeout`, and none starts after BLIP2_GPU_DEADLINE_S
# seconds (default 480), so a slow step costs its own numbers, not the rest.
#
# Prepare on the CPU machine: bash benchmarks/gpu/prepare.sh
# Device call: carry [".gpu"], command: bash benchmarks/gpu/run.sh
# Results land in $OUT (the device tool) or benchmarks/results/ (elsewhere).
#
# BLIP2_GPU_SMOKE=1 runs the checkpoint and measurement steps on this CPU
# with the tiny shapes (float32, few iterations, the existing build/), to
# check the script before spending GPU time.
set -uo pipefail
cd "$(dirname "$0")/../.."
smoke=${BLIP2_GPU_SMOKE:-0}
phase=${BLIP2_GPU_PHASE:-all}
deadline=${BLIP2_GPU_DEADLINE_S:-480}
out=${OUT:-benchmarks/results}
mkdir -p "$out"
log="$out/gpu_run_$phase.log"
exec > >(tee "$log") 2>&1
start=$(date +%s)
step() { echo; echo "== $* ($(( $(date +%s) - start )) s)"; }
time_left() { (( $(date +%s) - start < deadline )) || { echo "skipped: past the ${deadline} s deadline"; return 1; }; }

if [[ $smoke == 1 ]]; then
  device=cpu build=build iters=2 batches=1,8 soak=2000 kv_mb=64 concurrency=8,32 requests=64
  opt_shape=tiny opt_dtype=float32 t5_shape=tiny-t5 t5_dtype=float32 itm_shape=tiny-itm itm_dtype=float32
  itm_counts=(--images 16 --texts 20 --match-images 2)
  ckpt=/tmp/blip2-gpu-smoke
else
  device=cuda build=build-gpu iters=3 batches=1,8,64 soak=5000 kv_mb=20000 concurrency=64,128,256 requests=512
  opt_shape=opt-2.7b opt_dtype=float16 t5_shape=flan-t5-xl t5_dtype=bfloat16 itm_shape=itm-vit-g itm_dtype=float16
  itm_counts=(--images 64 --texts 100 --match-images 8)
  ckpt=/tmp/blip2-gpu
fi
opt_model=$ckpt/$opt_shape t5_model=$ckpt/$t5_shape itm_model=$ckpt/$itm_shape
# The carried Debian packages (abseil, spdlog, fmt) the GPU build links.
prefix=$PWD/.gpu/root
export LD_LIBRARY_PATH=$prefix/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
make_checkpoint() {  # shape dtype dir; .done marks a checkpoint written to the end
  [[ -f $3/.done ]] && return 0
  rm -rf "$3"
  python3 benchmarks/gpu/make_checkpoint.py "$3" --shape "$1" --dtype "$2" && touch "$3/.done"
}

# Each device call brings .gpu anew (debs only): unpack them every time.
if [[ $smoke != 1 ]]; then
  step "unpack carried packages"
  mkdir -p "$prefix"
  for deb in .gpu/debs/*.deb; do dpkg -x "$deb" "$prefix"; done
fi

tests_rc=0
if [[ $phase != bench ]]; then
  step "checkpoints: random $t5_shape ($t5_dtype) and $opt_shape ($opt_dtype) weights, in the background"
  (make_checkpoint "$t5_shape" "$t5_dtype" "$t5_model" && make_checkpoint "$opt_shape" "$opt_dtype" "$opt_model" &&
   make_checkpoint "$itm_shape" "$itm_dtype" "$itm_model") &
  checkpoints=$!
  if [[ $smoke != 1 ]]; then
    step "machine"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"


    step "configure and build (engine only, CUDA)"
    cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DBLIP2_ENGINE_ONLY=ON -DBLIP2_CUDA=ON \
      -DCMAKE_PREFIX_PATH="$prefix/usr" || exit 1
    ninja -C build-gpu -j14 -k 0 || exit 1

    step "tests on CUDA (parity: float32 vs fixtures, float16/bfloat16 vs float32; engine batching)"
    BLIP2_TEST_DEVICE=cuda timeout ${BLIP2_GPU_TEST_S:-240} ctest --test-dir build-gpu --output-on-failure -j8
    tests_rc=$?
    BLIP2_TEST_DEVICE=cuda timeout 60 build-gpu/tests/generation_parity_tests 2>&1 | grep PARITY > "$out/gpu_parity.txt"
    BLIP2_TEST_DEVICE=cuda timeout 60 build-gpu/tests/image_path_parity_tests 2>&1 | grep PARITY >> "$out/gpu_parity.txt"
    step "semantic: the demo model's held-out scenes on CUDA in float32, float16 and bfloat16 (>= 90% right)"
    BLIP2_TEST_DEVICE=cuda BLIP2_SEMANTIC_DTYPES=float32,float16,bfloat16,float16+int8,bfloat16+int8 timeout 120 build-gpu/tests/semantic_tests \
      2>&1 | tee "$out/gpu_semantic.txt" | grep -E "SEMANTIC|passed|failed"
    (( PIPESTATUS[0] == 0 )) || tests_rc=1
  fi
  step "waiting for the checkpoints"
  wait "$checkpoints" || { echo "checkpoint writing failed"; exit 1; }
  ls -la "$t5_model" "$opt_model" "$itm_model"
  [[ $phase == build ]] && { step "build phase done (tests exit code $tests_rc)"; exit $tests_rc; }
fi

# One model: ours (generation at each batch, the engine under load, for OPT the
# image path and the soak), transformers, then the combined report.
measure() {  # label model dtype with_image_and_soak
  local label=$1 model=$2 dtype=$3 full=$4
  local runs=$out/raw-$label
  mkdir -p "$runs"
  local common=(--model "$model" --skip-tiny --skip-synthetic --device "$device" --dtype "$dtype")
  if [[ $full == 1 ]] && step "$label ours: image path, batch 1, 8, 32, 64" && time_left; then
    timeout 120 "$build/benchmarks/image_path_bench" "${common[@]}" --batches 1,8,32,64 --iters "$iters" \
      --out "$runs/image_path.json"
  fi
  for batch in ${batches//,/ }; do
    [[ $batch == 1 ]] && continue  # batch-1 figures come with every run
    step "$label ours: generation at batch $batch, 32 new tokens" && time_left || continue
    timeout 120 "$build/benchmarks/generation_bench" "${common[@]}" --new-tokens 32 --batch "$batch" \
      --iters "$iters" --out "$runs/generation_b$batch.json"
  done
  local soak_flags=()
  [[ $full == 1 ]] && soak_flags=(--soak "$soak")
  if step "$label ours: the engine under load, $requests captions at $concurrency concurrent ${soak_flags[*]}" &&
     time_left; then
    timeout 180 "$build/benchmarks/engine_bench" --load-only --model "$model" --device "$device" --dtype "$dtype" \
      --requests "$requests" --concurrency "$concurrency" --new-tokens 32 --kv-cache-mb "$kv_mb" "${soak_flags[@]}" \
      --out "$runs/engine_load.json"
  fi
  if step "$label transformers: generate and the image path on the same checkpoint" && time_left; then
    timeout 150 python3 benchmarks/gpu/hf_caption_bench.py "$model" "$runs/transformers.json" --device "$device" \
      --dtype "$dtype" --batches "$batches" --new-tokens 32 --iters "$iters"
  fi
  step "$label report"
  local gpu
  gpu=$(python3 -c "import json; print(json.load(open('$runs/transformers.json')).get('gpu', 'cpu-smoke'))" |
        tr ' A-Z' '-a-z') || return 1
  python3 benchmarks/gpu/report.py "$runs" "$out/gpu-$gpu$5.json"
}

# Retrieval (blip2-itm-vit-g shape): Embed images/s and texts/s, Match pairs/s
# with 100 texts per image, ours and transformers' on the same weights.
measure_retrieval() {
  local runs=$out/raw-itm-vit-g
  mkdir -p "$runs"
  if step "itm-vit-g ours: Embed and Match" && time_left; then
    timeout 120 "$build/benchmarks/retrieval_bench" --model "$itm_model" --device "$device" --dtype "$itm_dtype" \
      "${itm_counts[@]}" --iters "$iters" --out "$runs/ours.json"
  fi
  if step "itm-vit-g transformers: the same workload" && time_left; then
    timeout 150 python3 benchmarks/gpu/hf_retrieval_bench.py "$itm_model" "$runs/transformers.json" \
      --device "$device" --dtype "$itm_dtype" "${itm_counts[@]}" --iters "$iters"
  fi
  step "itm-vit-g report"
  python3 - "$runs" "$out" <<'PY'
import json, os, subprocess, sys
runs, out = sys.argv[1], sys.argv[2]
ours = json.load(open(os.path.join(runs, "ours.json")))["results"][0]
hf = json.load(open(os.path.join(runs, "transformers.json")))
theirs = hf["results"][0]
rows = [{"metric": name, "ours": ours[a], "transformers": theirs[b], "ours_over_transformers": ours[a] / theirs[b]}
        for name, a, b in [("Embed images/s", "embed_images_per_s", "images_per_s"),
                           ("Embed texts/s", "embed_texts_per_s", "texts_per_s"),
                           ("Match pairs/s (100 texts per image)", "match_pairs_per_s", "match_pairs_per_s")]]
for r in rows:
    print(f"{r['metric']:<40} {r['ours']:>12.1f} {r['transformers']:>12.1f} {r['ours_over_transformers']:>7.2f}x")
gpu = hf.get("gpu", "cpu-smoke").replace(" ", "-").lower()
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
json.dump({"benchmark": "gpu-retrieval", "gpu": hf.get("gpu", hf["device"]), "dtype": hf["dtype"], "commit": commit,
           "rows": rows, "raw": {"ours": ours, "transformers": hf}},
          open(os.path.join(out, f"gpu-{gpu}-itm-vit-g.json"), "w"), indent=1)
PY
}

measure flan-t5-xl "$t5_model" "$t5_dtype" 0 "-flan-t5-xl"
measure_retrieval
measure opt-2.7b "$opt_model" "$opt_dtype" 1 ""
step "done"
exit $tests_rc
