#!/usr/bin/env bash
# Builds the libFuzzer harnesses (tests/fuzz: clang, AddressSanitizer,
# UndefinedBehaviorSanitizer) and runs each one: first every committed input
# once (tests/fuzz/corpus/<name> and tests/fuzz/regressions/<name>: inputs
# that once crashed must not crash again), then fuzzing for SECONDS (default
# 10) from that corpus. New inputs go to build-fuzz/out/<name>/corpus (add the
# interesting ones to the committed corpus); a crash leaves its input in
# build-fuzz/out/<name>/ and fails the run. Prints a table per harness:
# executions per second, corpus size, coverage (libFuzzer's cov: edges) and
# crashes; writes build-fuzz/out/summary.txt.
# --ci instead of SECONDS: the committed inputs, then 500 fuzzing runs per
# harness from a fixed seed, so a CI run is the same on every machine (a time
# limit would let a faster machine get further, and fail where others pass).
# Usage: scripts/fuzz.sh [SECONDS | --ci] [HARNESS...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
shift || true
if [ "$seconds" = "--ci" ]; then
  budget=(-seed=1 -runs=500)
  seconds="500 runs"
else
  budget=(-max_total_time="$seconds")
fi
build=build-fuzz
cmake -S . -B "$build" -G Ninja -DBLIP2_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C "$build" >/dev/null
harnesses=("$@")
if [ ${#harnesses[@]} -eq 0 ]; then
  harnesses=(image_fuzz safetensors_fuzz model_config_fuzz tokenizer_fuzz server_config_fuzz request_fuzz http_fuzz)
fi
out=$build/out
mkdir -p "$out"
summary=$out/summary.txt
printf '%-20s %9s %10s %8s %8s %s\n' harness budget exec/s corpus cov crashes | tee "$summary"
failed=0
for h in "${harnesses[@]}"; do
  bin=$build/tests/fuzz/$h
  work=$out/$h/corpus
  mkdir -p "$work"
  rm -f "$out/$h"/crash-* "$out/$h"/leak-* "$out/$h"/timeout-* "$out/$h"/oom-*  # a previous run's
  dirs=("$work" "tests/fuzz/corpus/$h")
  [ -d "tests/fuzz/regressions/$h" ] && dirs+=("tests/fuzz/regressions/$h")
  log=$out/$h/log.txt
  flags=(-rss_limit_mb=2048 -timeout=10 -artifact_prefix="$out/$h/" -print_final_stats=1)
  # Regression: every committed input once (the first folder only receives).
  if ! "$bin" "${flags[@]}" -runs=0 "${dirs[@]}" >"$log" 2>&1; then
    echo "$h: a committed input fails (see $log)"; tail -30 "$log"; failed=1; continue
  fi
  if ! "$bin" "${flags[@]}" "${budget[@]}" "${dirs[@]}" >>"$log" 2>&1; then
    echo "$h: crashed while fuzzing (input in $out/$h/, log $log)"; tail -40 "$log"; failed=1
  fi
  execs=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo 0)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo 0)
  corpus=$(find "${dirs[@]}" -type f | wc -l)
  crashes=$(find "$out/$h" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
  printf '%-20s %9s %10s %8s %8s %s\n' "$h" "$seconds" "$execs" "$corpus" "$cov" "$crashes" | tee -a "$summary"
done
exit $failed
