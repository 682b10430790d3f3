#!/usr/bin/env bash
# Retrieval on this CPU (float32): Embed images/s and texts/s, Match pairs/s
# with 100 texts per image, on the tiny retrieval fixture and on a random
# checkpoint of the full blip2-itm-vit-g shape (made once with
# benchmarks/gpu/make_checkpoint.py; stored bfloat16, 1.17 B parameters).
# Writes benchmarks/results/retrieval_cpu.json.
#   bash benchmarks/retrieval_cpu.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$build/benchmarks/retrieval_bench" --model tests/fixtures/blip2-tiny-itm --images 64 --texts 100 --match-images 8 \
  --iters 3 --out "$tmp/tiny.json"
itm=${BLIP2_ITM_DIR:-/tmp/itm-vit-g}
[[ -f $itm/.done ]] || { rm -rf "$itm"; python3 benchmarks/gpu/make_checkpoint.py "$itm" --shape itm-vit-g \
  --dtype bfloat16 && touch "$itm/.done"; }
# The ViT-g encoder takes seconds per image on 2 cores: fewer images here.
"$build/benchmarks/retrieval_bench" --model "$itm" --images 8 --texts 100 --match-images 2 --iters 1 \
  --out "$tmp/itm-vit-g.json"
python3 - "$tmp" benchmarks/results/retrieval_cpu.json <<'PY'
import json, sys
rows = []
for name in ("tiny", "itm-vit-g"):
    row = json.load(open(f"{sys.argv[1]}/{name}.json"))["results"][0]
    row["shape"] = name
    rows.append(row)
json.dump({"benchmark": "retrieval_cpu", "machine": "2-core CPU", "results": rows}, open(sys.argv[2], "w"), indent=1)
for r in rows:
    print(f"{r['shape']:<10} Embed {r['embed_images_per_s']:.1f} images/s, {r['embed_texts_per_s']:.1f} texts/s; "
          f"Match {r['match_pairs_per_s']:.1f} pairs/s ({r['texts_per_image']} texts per image)")
PY
