"""Combines t5_cpu.sh's engine_bench files (or re-reads t5_cpu.json) into one
table and benchmarks/results/t5_cpu.json. At one concurrent request, the
decode time per token is (time per request - time to first token) /
(new tokens - 1): what is left after the image, the encoder and the first step.

    python3 t5_cpu_summary.py OUT.json [ENGINE_BENCH_JSON ...]
"""
import json
import os
import sys


def main():
    out, inputs = sys.argv[1], sys.argv[2:]
    rows = []
    if inputs:
        for path in sorted(inputs):
            label = os.path.basename(path).rsplit("-", 1)[0]
            rows += [{"model": label, **r} for r in json.load(open(path))["results"]]
    else:
        rows = json.load(open(out))["results"]
    for r in rows:
        if r["concurrent"] == 1:
            per_request_ms = r["seconds"] * 1e3 / r["requests"]
            r["decode_ms_per_token"] = (per_request_ms - r["ttft_p50_ms"]) / (r["new_tokens"] - 1)
    print(f"{'model':<18} {'concurrent':>10} {'requests':>9} {'new tokens':>10} {'decode ms/token':>15} "
          f"{'tokens/s':>10} {'TTFT p50 ms':>12}")
    for r in rows:
        decode = f"{r['decode_ms_per_token']:.2f}" if "decode_ms_per_token" in r else "-"
        print(f"{r['model']:<18} {r['concurrent']:>10} {r['requests']:>9} {r['new_tokens']:>10} {decode:>15} "
              f"{r['tokens_per_s']:>10.1f} {r['ttft_p50_ms']:>12.1f}")
    with open(out, "w") as f:
        json.dump({"benchmark": "t5_cpu", "machine": "2-core CPU", "dtype": "float32", "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
