"""Combines one GPU run's JSON files into benchmarks/results/gpu-<gpu>*.json and
prints one table: our engine beside transformers on the same checkpoint, and
(OPT) both beside the targets of issue [E].

    python3 report.py RUN_DIR OUT.json
RUN_DIR holds generation_b<N>.json, engine_load.json, transformers.json and
(optionally) image_path.json as benchmarks/gpu/run.sh writes them.
"""
import glob
import json
import os
import subprocess
import sys

TARGETS = {"captions_per_s_saturation": 500, "ms_per_token_batch1": 3.0, "ttft_idle_ms": 20.0,
           "encoder_images_per_s_batch64": 1200}


def load(path):
    with open(path) as f:
        return json.load(f)


def main():
    run, out = sys.argv[1], sys.argv[2]
    hf = load(os.path.join(run, "transformers.json"))
    # The targets are [E]'s, for blip2-opt-2.7b.
    targets = TARGETS if hf.get("model_type", "opt") == "opt" else {}
    hf_by_batch = {r["batch"]: r for r in hf["results"]}
    ours_by_batch = {}
    for path in sorted(glob.glob(os.path.join(run, "generation_b*.json"))):
        for r in load(path)["results"]:
            ours_by_batch[r["batch"]] = r
            ours_by_batch.setdefault(1, r)  # batch-1 figures are in every file
    image_file = os.path.join(run, "image_path.json")
    image = load(image_file)["results"] if os.path.exists(image_file) else []
    load_file = os.path.join(run, "engine_load.json")
    engine_load = load(load_file) if os.path.exists(load_file) else {"results": []}
    load_rows = engine_load["results"]
    soak = engine_load.get("soak")
    best = max(load_rows, key=lambda r: r["captions_per_s"], default=None)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()

    rows = []
    def row(name, ours, theirs, target=None, higher_is_better=True):
        ratio = None
        if ours and theirs:
            ratio = ours / theirs if higher_is_better else theirs / ours
        rows.append({"metric": name, "ours": ours, "transformers": theirs, "ours_over_transformers": ratio,
                     "target": target})

    one = ours_by_batch.get(1, {})
    row("ms per token, batch 1", one.get("ms_per_token_batch1"), hf_by_batch.get(1, {}).get("ms_per_token"),
        targets.get("ms_per_token_batch1"), higher_is_better=False)
    row("time to first token, batch 1, ms", one.get("time_to_first_token_ms"),
        hf_by_batch.get(1, {}).get("time_to_first_token_ms"), targets.get("ttft_idle_ms"), higher_is_better=False)
    for batch in sorted(hf_by_batch):
        ours = ours_by_batch.get(batch)
        ours_caps = ours["tokens_per_s_batch"] / ours["new_tokens"] if ours and batch > 1 else None
        if batch == 1 and one:
            ours_caps = 1000.0 / (one["time_to_first_token_ms"] + one["ms_per_token_batch1"] * (hf["results"][0]["new_tokens"] - 1))
        row(f"captions/s, batch {batch}", ours_caps, hf_by_batch[batch]["captions_per_s"])
    if best:
        row(f"captions/s, engine at {best['concurrent']} concurrent", best["captions_per_s"],
            max(r["captions_per_s"] for r in hf["results"]), targets.get("captions_per_s_saturation"))
        row(f"TTFT p50 at {best['concurrent']} concurrent, ms", best["ttft_p50_ms"], None)
        row(f"TTFT p99 at {best['concurrent']} concurrent, ms", best["ttft_p99_ms"], None)
    enc = max((r for r in image if r["batch"] == hf["image_path"]["batch"]), key=lambda r: r["encoder_images_per_s"],
              default=None)
    if enc:
        row(f"image path images/s, batch {hf['image_path']['batch']}", enc["encoder_images_per_s"],
            hf["image_path"]["images_per_s"], targets.get("encoder_images_per_s_batch64"))

    if soak:
        first, last = soak["checkpoints"][0], soak["checkpoints"][-1]
        peak = last["device_peak_allocated_mb"]
        row("device memory peak, MB (ours; transformers)", peak if peak >= 0 else None,
            hf.get("peak_memory_gb") and hf["peak_memory_gb"] * 1024)
        row(f"KV capacity at {soak['kv_blocks_total']} blocks, concurrent 32-token captions",
            soak["kv_capacity_concurrent_captions"], None)
        key = "device_allocated_mb" if last["device_allocated_mb"] >= 0 else "host_rss_mb"
        row(f"{key} growth, {first['requests']} -> {last['requests']} requests", last[key] - first[key], None)
    print(f"{'metric':<56} {'ours':>10} {'transformers':>13} {'ratio':>7} {'target':>8}")
    for r in rows:
        fmt = lambda v: f"{v:.2f}" if isinstance(v, float) else ("-" if v is None else str(v))
        ratio = f"{r['ours_over_transformers']:.2f}x" if r["ours_over_transformers"] else "-"
        print(f"{r['metric']:<56} {fmt(r['ours']):>10} {fmt(r['transformers']):>13} {ratio:>7} {fmt(r['target']):>8}")
    report = {"benchmark": "gpu", "gpu": hf.get("gpu", hf["device"]), "commit": commit, "dtype": hf["dtype"],
              "checkpoint": "random weights, " + os.path.basename(hf["model"].rstrip("/")),
              "transformers_peak_memory_gb": hf.get("peak_memory_gb"), "rows": rows, "targets": targets,
              "raw": {"transformers": hf, "engine_load": load_rows, "image_path": image,
                      "generation": list(ours_by_batch.values()), "soak": soak}}
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
    print("wrote", out)


if __name__ == "__main__":
    main()
