#!/usr/bin/env bash
# The whole test suite from a fresh clone: install, build, run every test
# through ctest; then the tests whose numbers depend on the CPU again, under
# other LibTorch kernel families and intra-op thread counts, so a tolerance
# that only holds for one machine's rounding fails here rather than on the
# next machine. Machines of our kind differ (AVX2 or AVX-512); LibTorch
# picks kernels by capability and never above what the CPU has.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh build
# The CPU's best kernels, LibTorch's default thread count.
ctest --test-dir build --output-on-failure -j2
# Model numbers (parity), the engine and scheduler (unit), the server's
# answers against transformers (server); not the command-line and deploy checks.
numeric_labels='parity|unit|server'
for config in "avx2 1" "default 2"; do
  read -r capability threads <<< "$config"
  echo "== ATEN_CPU_CAPABILITY=$capability OMP_NUM_THREADS=$threads: ctest -L '$numeric_labels'"
  ATEN_CPU_CAPABILITY=$capability OMP_NUM_THREADS=$threads \
    ctest --test-dir build --output-on-failure -j2 -L "$numeric_labels"
done
# Every fuzz harness over its committed corpus and regression inputs, then
# 500 fuzzing runs from a fixed seed (clang, libFuzzer, ASan, UBSan;
# docs/hardening.md).
bash scripts/fuzz.sh --ci
