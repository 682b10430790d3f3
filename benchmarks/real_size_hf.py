"""transformers' side of the real-size benchmark (benchmarks/real_size.py):
the same checkpoint, dtype, threads and measures as real_size_bench.

    python3 real_size_hf.py MODEL_DIR OUT.json [--dtype bfloat16] [--threads N]
        [--new-tokens 20] [--batches 1,8] [--iters 3]

time to ready: from_pretrained in the dtype plus one 2-token caption; memory
from /proc/self/status (peak VmHWM, steady RssAnon and RssFile); time to first
token and ms/token at batch 1 ((t(N) - t(1)) / (N - 1), medians); captions/s
for a static batch of each size through generate().
"""
import argparse
import json
import time

import torch
from transformers import Blip2ForConditionalGeneration


def status_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return -1


def memory():
    return {"peak_rss_gb": status_bytes("VmHWM") / 1e9, "rss_gb": status_bytes("VmRSS") / 1e9,
            "rss_anon_gb": status_bytes("RssAnon") / 1e9, "rss_file_gb": status_bytes("RssFile") / 1e9}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("out")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--iters", type=int, default=3)
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    start = time.perf_counter()
    model = Blip2ForConditionalGeneration.from_pretrained(args.model, dtype=dtype).eval()
    out = {"model": args.model, "dtype": args.dtype, "threads": torch.get_num_threads(),
           "new_tokens": args.new_tokens, "transformers": __import__("transformers").__version__,
           "torch": torch.__version__, "load_s": time.perf_counter() - start, "memory_after_load": memory()}
    cfg = model.config
    t5 = cfg.text_config.model_type == "t5"
    tail = cfg.text_config.eos_token_id if t5 else cfg.text_config.bos_token_id
    size = cfg.vision_config.image_size

    def caption(batch, tokens, seed):
        torch.manual_seed(seed)  # distinct images, as ours
        ids = torch.tensor([[cfg.image_token_index] * cfg.num_query_tokens + [tail]] * batch)
        pixels = torch.randn(batch, 3, size, size, dtype=dtype)
        begin = time.perf_counter()
        with torch.inference_mode():
            model.generate(pixel_values=pixels, input_ids=ids, attention_mask=torch.ones_like(ids),
                           max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        return time.perf_counter() - begin

    caption(1, 2, 0)
    out["ready_s"] = time.perf_counter() - start
    out["memory_ready"] = memory()
    print(f"transformers ready in {out['ready_s']:.1f} s (load {out['load_s']:.1f} s); "
          f"peak RSS {out['memory_ready']['peak_rss_gb']:.2f} GB", flush=True)
    first = sorted(caption(1, 1, 10 + i) for i in range(args.iters))[args.iters // 2]
    full = sorted(caption(1, args.new_tokens, 20 + i) for i in range(args.iters))[args.iters // 2]
    out["ttft_s"] = first
    out["ms_per_token_batch1"] = (full - first) / (args.new_tokens - 1) * 1e3
    print(f"transformers batch 1: time to first token {first:.3f} s, {out['ms_per_token_batch1']:.1f} ms/token",
          flush=True)
    rows = []
    for batch in [int(b) for b in args.batches.split(",") if b]:
        seconds = caption(batch, args.new_tokens, 100 + batch)
        rows.append({"batch": batch, "seconds": seconds, "captions_per_s": batch / seconds})
        print(f"transformers batch {batch}: {seconds:.2f} s, {batch / seconds:.3f} captions/s", flush=True)
    out["batches"] = rows
    out["memory_end"] = memory()
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
