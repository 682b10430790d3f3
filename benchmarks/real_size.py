"""The real-size benchmark: ours against transformers on the same random
checkpoint in a released shape, the same image sizes and threads, in one run.
Not part of CI: it needs ~15 GB of disk per checkpoint and minutes.

    python3 benchmarks/real_size.py [--shape opt-2.7b] [--checkpoints /var/tmp/blip2-real-size]
        [--configs bfloat16,bfloat16+int8] [--hf-dtypes bfloat16] [--threads 0]
        [--new-tokens 20] [--concurrency 1,4,8,16] [--hf-batches 1,8]
        [--out benchmarks/results/real_size_cpu.json] [--build build]

1. Writes the checkpoint with benchmarks/gpu/make_checkpoint.py (float32 on
   disk, as blip2-opt-2.7b is released) unless the folder has one already.
2. Measures the machine: a streamed read of a 2 GiB buffer by LibTorch with
   the same threads (GB/s), and from the checkpoint's header the bytes one
   decode step must read (the language model's linear weights in the serving
   dtype, or int8, plus its output head): their quotient is the floor for
   ms/token at batch 1.
3. For each of our configurations (DTYPE or DTYPE+int8) runs real_size_bench,
   for each transformers dtype real_size_hf.py, each in a fresh process after
   reading the checkpoint once so that every load starts from a warm page
   cache (the disk's own speed is reported apart).
4. Writes everything to --out and prints a markdown table.
"""
import argparse
import json
import os
import platform
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# Language-model tensors the engine keeps in the serving dtype under int8
# (tests/parity/perturbed_checkpoint.cc IsQuantizedLinear says the same).
KEPT_FLOAT = ("embed", "lm_head", "shared", "relative_attention_bias")


def quantized(name, shape):
    """Whether quantization "int8" stores this tensor as int8."""
    return len(shape) == 2 and name.startswith("language_model.") and not any(k in name for k in KEPT_FLOAT)


def safetensors_headers(folder):
    files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
    for name in files:
        with open(os.path.join(folder, name), "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for tensor, info in header.items():
            if tensor != "__metadata__":
                yield tensor, info["shape"]


def decode_bytes(folder, dtype, int8):
    """Bytes a batch-1 decode step reads: every language-model weight but the
    input embeddings (one row each), the output head (tied to them or not)."""
    size = DTYPE_BYTES[dtype]
    total = 0
    head = None
    for name, shape in safetensors_headers(folder):
        if not name.startswith("language_model."):
            continue
        numel = 1
        for d in shape:
            numel *= d
        if "lm_head" in name:
            head = numel
        elif "embed_tokens" in name or name.endswith("shared.weight"):
            head = head if head is not None else numel  # tied: the head reads it
        elif "embed_positions" in name:
            continue
        elif int8 and quantized(name, shape):
            total += numel  # one byte each
        else:
            total += numel * size
    return total + (head or 0) * size


def stream_bandwidth(threads):
    code = ("import torch,time\n"
            f"torch.set_num_threads({threads}) if {threads} > 0 else None\n"
            "x = torch.ones(2**29, dtype=torch.float32)\n"
            "x.sum()\n"
            "best = min((lambda t: (x.sum(), time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(5))\n"
            "print(x.numel() * 4 / best / 1e9)\n")
    return float(subprocess.check_output([sys.executable, "-c", code], text=True).strip().splitlines()[-1])


def read_whole(folder):
    """Reads every file once (warm page cache); returns GB/s of that read."""
    start, total = time.perf_counter(), 0
    for name in os.listdir(folder):
        with open(os.path.join(folder, name), "rb") as f:
            while chunk := f.read(64 << 20):
                total += len(chunk)
    return total / (time.perf_counter() - start) / 1e9


def run(cmd, log):
    print("+", " ".join(cmd), flush=True)
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        f.write(proc.stdout)
    print(proc.stdout[-2000:], flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}; see {log}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="opt-2.7b")
    parser.add_argument("--disk-dtype", default="float32")
    parser.add_argument("--checkpoints", default="/var/tmp/blip2-real-size")
    parser.add_argument("--configs", default="bfloat16,bfloat16+int8")
    parser.add_argument("--hf-dtypes", default="bfloat16")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--concurrency", default="1,4,8,16")
    parser.add_argument("--hf-batches", default="1,8")
    parser.add_argument("--iters", type=int, default=3)
    # Room for 16 captions of 53 tokens of OPT-2.7b in float32 (655 KB a token) without preemption.
    parser.add_argument("--kv-cache-mb", type=int, default=1024)
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--out", default=os.path.join(HERE, "results", "real_size_cpu.json"))
    args = parser.parse_args()

    folder = os.path.join(args.checkpoints, f"{args.shape}-{args.disk_dtype}")
    if not os.path.exists(os.path.join(folder, "config.json")):
        start = time.perf_counter()
        subprocess.check_call([sys.executable, os.path.join(HERE, "gpu", "make_checkpoint.py"), folder,
                               "--shape", args.shape, "--dtype", args.disk_dtype])
        print(f"checkpoint written in {time.perf_counter() - start:.0f} s", flush=True)
    logs = os.path.join(args.checkpoints, "logs")
    os.makedirs(logs, exist_ok=True)
    with open("/proc/cpuinfo") as f:
        flags = next((line.split(":")[1].split() for line in f if line.startswith("flags")), [])
    bandwidth = stream_bandwidth(args.threads)
    result = {"shape": args.shape, "disk_dtype": args.disk_dtype, "checkpoint": folder,
              "checkpoint_gb": sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)) / 1e9,
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "avx512": "avx512f" in flags, "amx": "amx_tile" in flags,
                          "avx512_bf16": "avx512_bf16" in flags,
                          "memory_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9,
                          "stream_read_gb_s": bandwidth},
              "ours": [], "transformers": []}
    print(f"streamed read: {bandwidth:.1f} GB/s", flush=True)
    for config in [c for c in args.configs.split(",") if c]:
        dtype, _, quant = config.partition("+")
        floor_bytes = decode_bytes(folder, dtype, quant == "int8")
        result["page_cache_read_gb_s"] = read_whole(folder)
        out = os.path.join(logs, f"ours-{config}.json")
        run([os.path.join(args.build, "benchmarks", "real_size_bench"), "--model", folder, "--dtype", dtype,
             "--quantization", quant or "none", "--threads", str(args.threads), "--new-tokens", str(args.new_tokens),
             "--concurrency", args.concurrency, "--iters", str(args.iters), "--kv-cache-mb", str(args.kv_cache_mb),
             "--out", out], out + ".log")
        with open(out) as f:
            ours = json.load(f)
        ours["config"] = config
        ours["decode_bytes_gb"] = floor_bytes / 1e9
        ours["floor_ms_per_token"] = floor_bytes / (bandwidth * 1e9) * 1e3
        result["ours"].append(ours)
    for dtype in [d for d in args.hf_dtypes.split(",") if d]:
        read_whole(folder)
        out = os.path.join(logs, f"transformers-{dtype}.json")
        run([sys.executable, os.path.join(HERE, "real_size_hf.py"), folder, out, "--dtype", dtype,
             "--threads", str(args.threads), "--new-tokens", str(args.new_tokens), "--batches", args.hf_batches,
             "--iters", str(args.iters)], out + ".log")
        with open(out) as f:
            hf = json.load(f)
        hf["decode_bytes_gb"] = decode_bytes(folder, dtype, False) / 1e9
        hf["floor_ms_per_token"] = hf["decode_bytes_gb"] / bandwidth * 1e3
        result["transformers"].append(hf)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print_table(result)


def table_row(label, r, rates):
    m = r["memory_ready"]
    return (f"| {label} | {r['ready_s']:.1f} ({r['load_s']:.1f}) | {m['peak_rss_gb']:.2f} | "
            f"{m['rss_gb']:.2f} ({m['rss_anon_gb']:.2f} + {m['rss_file_gb']:.2f}) | {r['ttft_s']:.2f} | "
            f"{r['ms_per_token_batch1']:.0f} ({r['floor_ms_per_token']:.0f}) | {rates} |")


def print_table(result):
    print(f"\n{result['shape']} ({result['checkpoint_gb']:.1f} GB {result['disk_dtype']} on disk), "
          f"{result['machine']['cores']} cores, streamed read {result['machine']['stream_read_gb_s']:.1f} GB/s\n")
    print("| | ready s (load) | peak RSS GB | steady RSS GB (anon + file) | TTFT s | ms/token (floor) | captions/s |")
    print("|---|---|---|---|---|---|---|")
    for r in result["ours"]:
        rates = ", ".join(f"{c['concurrent']}: {c['captions_per_s']:.3f}" for c in r["concurrent"])
        print(table_row(f"ours {r['config']}", r, rates))
    for r in result["transformers"]:
        rates = ", ".join(f"batch {b['batch']}: {b['captions_per_s']:.3f}" for b in r["batches"])
        print(table_row(f"transformers {r['dtype']}", r, rates))

if __name__ == "__main__":
    main()
