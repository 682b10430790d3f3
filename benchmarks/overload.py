#!/usr/bin/env python3
"""Overload at 10x capacity: do admitted requests keep their latency, and who is refused?

Starts `blip2 serve` on the tiny OPT model (configs/tiny-opt-cpu.textproto) with
limits.max_queue_wait_ms set, then drives it with build/benchmarks/grpc_load (Generate calls,
distinct JPEGs, exactly --new-tokens tokens each):

  1. capacity: a closed loop at --concurrency calls in flight on a server without the wait bound;
     requests completed per second (C); then a fresh server with the bound, warmed up:
  2. unloaded: Poisson arrivals at 0.1 C; its p99 time to first token is U;
  3. overload, one priority: Poisson arrivals at 10 C, all priority 0;
  4. overload, mixed priorities: 10 C, 3% priority 0 (0.3 C) and 97% priority 5.

Checks (printed as PASS/FAIL, saved with every number in the JSON report):
  - admitted requests' p99 time to first token within 2 U, in both overload runs;
  - the excess gets RESOURCE_EXHAUSTED at once: its p99 latency under U, and no other error;
  - with mixed priorities, priority 0 keeps its latency (p99 TTFT within 2 U) and is refused
    for at most 1% of its calls, while priority 5 takes the refusals and the sheds.

The server runs on CPU 0 and the load generator on the others (--server-cpus, --client-cpus), so
the generator's own work does not slow the server it measures.

Usage: benchmarks/overload.py [--build build] [--max-queue-wait-ms 10] [--seconds 20]
                              [--out benchmarks/results/overload_cpu.json]
A benchmark, not a test: it never fails the build; the exit code says whether every check passed.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

parser = argparse.ArgumentParser()
parser.add_argument("--build", default=os.path.join(ROOT, "build"))
parser.add_argument("--max-queue-wait-ms", type=int, default=10)
parser.add_argument("--seconds", type=float, default=20)
parser.add_argument("--concurrency", type=int, default=128)
parser.add_argument("--new-tokens", type=int, default=32)
parser.add_argument("--image-size", type=int, default=96)
parser.add_argument("--overload-factor", type=float, default=10)
parser.add_argument("--priority-0-share", type=float, default=0.03, help="of the mixed overload's calls")
# On a small machine the load generator would take the server's CPU: by default the server gets
# CPU 0 and the generator the others (clients run elsewhere in production). "" pins nothing.
parser.add_argument("--server-cpus", default="0")
parser.add_argument("--client-cpus", default=None, help="default: every CPU but the server's")
parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "overload_cpu.json"))
args = parser.parse_args()

tmp = tempfile.mkdtemp()
grpc_port = None
all_cpus = sorted(os.sched_getaffinity(0))
client_cpus = args.client_cpus
if client_cpus is None and args.server_cpus:
    server_set = {int(c) for c in args.server_cpus.split(",")}
    client_cpus = ",".join(str(c) for c in all_cpus if c not in server_set) or args.server_cpus


def pin(cpus):
    return ["taskset", "-c", cpus] if cpus else []



def start_server(max_queue_wait_ms):
    global grpc_port
    ports_file = tempfile.mktemp(prefix="ports", dir=tmp)  # a fresh name per server: never an old port
    log = open(ports_file + ".log", "w")
    proc = subprocess.Popen(pin(args.server_cpus) + [os.path.join(args.build, "server", "blip2"), "serve", "--config",
                             os.path.join(ROOT, "configs", "tiny-opt-cpu.textproto"), "--port", "0",
                             "--metrics_port", "0", "--port_file", ports_file,
                             "--limits.max_queue_wait_ms", str(max_queue_wait_ms)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
    for _ in range(600):
        if os.path.exists(ports_file) and os.path.getsize(ports_file) > 0:
            break
        time.sleep(0.1)
    grpc_port = open(ports_file).read().split()[0]
    return proc


def stop_server(proc):
    proc.terminate()
    proc.wait(timeout=60)


def load(name, *flags):
    """One grpc_load run; returns its single result row."""
    out = os.path.join(tmp, name + ".json")
    cmd = pin(client_cpus) + [os.path.join(args.build, "benchmarks", "grpc_load"), "--target", f"127.0.0.1:{grpc_port}",
           "--new-tokens", str(args.new_tokens), "--image-size", str(args.image_size), "--deadline-s", "60",
           "--out", out, *flags]
    print(f"== {name}: {' '.join(flags)}", flush=True)
    subprocess.run(cmd, check=True, stdout=sys.stdout)
    return json.load(open(out))["results"][0]


def open_loop(name, rate, extra=()):
    calls = int(rate * args.seconds) + 1
    return load(name, "--mode", "open", "--rate", f"{rate:.1f}", "--seconds", str(args.seconds),
                "--images", str(calls), *extra)


# Capacity: what the server completes with no wait bound (a closed loop keeps it busy).
server = start_server(0)
try:
    load("warm-up", "--concurrency", "32", "--requests", "1000", "--images", "1000")
    capacity_row = load("capacity", "--concurrency", str(args.concurrency), "--requests", "6000", "--images", "6000")
finally:
    stop_server(server)
capacity = capacity_row["requests_per_s"]
# The rest on a server with the wait bound; its warm-up also lets it measure its drain rate.
server = start_server(args.max_queue_wait_ms)
try:
    load("warm-up", "--concurrency", "32", "--requests", "1000", "--images", "1000")
    unloaded = open_loop("unloaded", 0.1 * capacity)
    rate = args.overload_factor * capacity
    uniform = open_loop("overload, priority 0", rate)
    share = args.priority_0_share
    mixed = open_loop("overload, mixed priorities", rate, ["--priorities", f"0:{share},5:{1 - share}"])
finally:
    stop_server(server)

U = unloaded["ttft_ms"]["p99"]


def refused(row, priority=None):
    errors = row["errors"] if priority is None else row.get("by_priority", {}).get(str(priority), {}).get("errors", {})
    return errors.get("RESOURCE_EXHAUSTED", 0)


def other_errors(row):
    return {code: n for code, n in row["errors"].items() if code != "RESOURCE_EXHAUSTED"}


def refusal_p99(row):
    return row.get("error_latency_ms", {}).get("RESOURCE_EXHAUSTED", {}).get("p99", 0)


p0, p5 = mixed["by_priority"]["0"], mixed["by_priority"]["5"]
p0_calls = p0["ok"] + sum(p0["errors"].values())
p5_calls = p5["ok"] + sum(p5["errors"].values())
checks = {
    "priority 0 only: admitted p99 TTFT within 2x unloaded": uniform["ttft_ms"]["p99"] <= 2 * U,
    "mixed: admitted p99 TTFT within 2x unloaded": mixed["ttft_ms"]["p99"] <= 2 * U,
    "the excess is refused at once (RESOURCE_EXHAUSTED p99 under the unloaded p99 TTFT)":
        refusal_p99(uniform) <= U and refusal_p99(mixed) <= U,
    "no error but RESOURCE_EXHAUSTED": not other_errors(uniform) and not other_errors(mixed),
    "unloaded: nothing refused": refused(unloaded) == 0,
    "mixed: priority 0 keeps its latency (p99 TTFT within 2x unloaded)": p0["ttft_ms"]["p99"] <= 2 * U,
    "mixed: priority 0 refused for at most 1% of its calls": refused(mixed, 0) <= 0.01 * p0_calls,
    "mixed: priority 5 takes the refusals": refused(mixed, 5) > 10 * max(1, refused(mixed, 0)),
}
for name, ok in checks.items():
    print(("PASS " if ok else "FAIL ") + name)
print(f"capacity {capacity:.0f} requests/s; unloaded p99 TTFT {U:.1f} ms (limit {2 * U:.1f}); "
      f"overload at {rate:.0f}/s: priority 0 only p99 {uniform['ttft_ms']['p99']:.1f} ms, "
      f"{uniform['ok']} ok, {refused(uniform)} refused (p99 {refusal_p99(uniform):.2f} ms); mixed p99 "
      f"{mixed['ttft_ms']['p99']:.1f} ms, priority 0: {p0['ok']} ok of {p0_calls} (p99 {p0['ttft_ms']['p99']:.1f} ms), "
      f"priority 5: {p5['ok']} ok of {p5_calls} (p99 {p5['ttft_ms']['p99']:.1f} ms)")
report = {"benchmark": "overload", "model": "tests/fixtures/blip2-tiny-opt", "config": "configs/tiny-opt-cpu.textproto",
          "server_cpus": args.server_cpus, "client_cpus": client_cpus, "machine_cpus": len(all_cpus),
          "max_queue_wait_ms": args.max_queue_wait_ms, "priority_0_share": args.priority_0_share, "new_tokens": args.new_tokens, "image_size": args.image_size,
          "seconds_per_run": args.seconds, "capacity_requests_per_s": capacity, "unloaded_p99_ttft_ms": U,
          "overload_rate_per_s": rate, "runs": {"capacity": capacity_row, "unloaded": unloaded,
                                                "overload_priority_0": uniform, "overload_mixed": mixed},
          "checks": checks}
os.makedirs(os.path.dirname(args.out), exist_ok=True)
json.dump(report, open(args.out, "w"), indent=1)
print("wrote", args.out)
sys.exit(0 if all(checks.values()) else 1)
