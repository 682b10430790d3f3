"""Timing shared by the transformers benchmarks (hf_*_bench.py)."""
import statistics
import time

import torch


def median_seconds(fn, device, iters):
    """Runs fn once to warm up, then `iters` times; the median wall time in
    seconds, the device synchronised around each run."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    fn()
    samples = []
    for _ in range(iters):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)
