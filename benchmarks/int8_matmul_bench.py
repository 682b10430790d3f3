"""Why Linear has its own int8 kernel for decode-sized products: LibTorch's
weight-only int8 matmul (torch._weight_int8pack_mm, what at::_weight_int8pack_mm
runs) against the dense product, on one OPT-2.7b feed-forward weight
(10240 x 2560), with this machine's threads.

    python3 benchmarks/int8_matmul_bench.py [--rows 1,8,64]

Prints ms and GB/s of weights read per product for each input dtype.
"""
import argparse
import time

import torch


def seconds(fn, iters=20):
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="1,8,64")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}")
    out, inp = 10240, 2560
    weight = torch.randn(out, inp)
    scales = weight.abs().amax(1) / 127
    q = torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8)
    for rows in [int(r) for r in args.rows.split(",")]:
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            x = torch.randn(rows, inp, dtype=dtype)
            dense = weight.to(dtype)
            s = scales.to(dtype)
            t_int8 = seconds(lambda: torch._weight_int8pack_mm(x, q, s))
            t_dense = seconds(lambda: torch.nn.functional.linear(x, dense))
            print(f"rows {rows:3d} {str(dtype):15s} int8 {t_int8 * 1e3:7.2f} ms ({q.numel() / t_int8 / 1e9:5.1f} GB/s)"
                  f"   dense {t_dense * 1e3:7.2f} ms ({dense.numel() * dense.element_size() / t_dense / 1e9:5.1f} GB/s)")


if __name__ == "__main__":
    main()
