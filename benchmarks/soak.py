#!/usr/bin/python3
"""A mixed-traffic soak of `blip2 serve` (Debian's python3-grpcio; stubs from the build).

Starts the server on the tiny OPT model with the tiny retrieval model beside it and the HTTP API on,
then runs CLIENTS threads for MINUTES, each picking at random: greedy captions, sampled streams,
beams, batches (with a bad item), register -> caption -> release flows on shared images, Match and
Embed, streams cancelled after two messages, calls with a 5 ms deadline, slow readers, bad inputs
(garbage images, bad options, unknown ids), HTTP chat calls (plain, streamed, bad JSON) and bursts
of 40 calls at mixed priorities (2% of picks; the server runs with limits.max_queue_wait_ms, so bursts are
refused or shed in part: RESOURCE_EXHAUSTED is allowed everywhere).
Every call must end with one status from the set its scenario allows. A warm-up at full load
(10% of the run, 10 to 60 s) comes first; the idle values are taken after it. Every 10 s it records the
server's RSS, threads and open file descriptors; at the end, once idle, KV blocks in use, registered
images, image-cache pins, calls in flight, the admission queue, our threads (blip2-*) and descriptors must be back at
their idle values, all threads bounded (none added in the run's second half: gRPC's own pools grow
on demand to a cap and keep some; a leak keeps growing), and RSS growth after warm-up must stay under
1% per 10 minutes. `--recheck REPORT` evaluates a saved report again. Prints PASS/FAIL lines and writes a JSON report.

Usage: benchmarks/soak.py [--minutes 30] [--clients 12] [--build build] [--out benchmarks/results/soak_cpu.json]
"""
import argparse
import atexit
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import base64

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGES = os.path.join(ROOT, "tests", "fixtures", "images")

parser = argparse.ArgumentParser()
parser.add_argument("--minutes", type=float, default=30)
parser.add_argument("--clients", type=int, default=12)
parser.add_argument("--build", default=os.path.join(ROOT, "build"))
parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "soak_cpu.json"))
parser.add_argument("--recheck", metavar="REPORT", help="evaluate a saved report's data again (no run); updates it "
                    "and keeps the checks it had as checks_at_run")
args = parser.parse_args()

# --- the checks -------------------------------------------------------------------------------
def evaluate(report, out):
    """Checks a soak report (a fresh one, or one saved earlier: --recheck), prints and saves them."""
    before, after, samples = report["idle_before"], report["idle_after"], report["samples"]
    minutes = report["minutes"]
    # RSS growth after warm-up (the first 20% of the run): least-squares slope, % per 10 minutes.
    warm = [s for s in samples if s["t"] >= 0.2 * minutes * 60] or samples
    slope = 0.0
    if len(warm) >= 2:
        mt, mr = sum(s["t"] for s in warm) / len(warm), sum(s["rss_mb"] for s in warm) / len(warm)
        var = sum((s["t"] - mt) ** 2 for s in warm)
        slope = sum((s["t"] - mt) * (s["rss_mb"] - mr) for s in warm) / var if var else 0.0
    growth = 100 * slope * 600 / (sum(s["rss_mb"] for s in warm) / len(warm)) if warm else 0.0
    # Threads: ours back at idle; gRPC's own pools (its timer and executor threads) start threads
    # on demand up to a cap and keep some, so all threads must only be bounded: none added in the
    # second half of the run beyond the first half's and the warm-up's peak (a leak keeps growing).
    half = len(samples) // 2
    first_peak = max([report.get("warm_up_peak_threads", 0)] + [s["threads"] for s in samples[:half]])
    later_peak = max([s["threads"] for s in samples[half:]] + [after["threads"]])
    checks = {
        "every call ended with an allowed status": report.get("failure_count", len(report["failures"])) == 0,
        "KV blocks back to 0": after["kv"] == 0,
        "registered images back to 0": after["registered"] == 0 and after["registrations"] == 0,
        "no call in flight": after["in_flight"] == 0,
        "admission queue back to 0": after["queued"] == 0,
        "image-cache pins back to 0": after["pins"] == 0,
        "our threads (blip2-*) back to idle": own_threads(after["thread_names"]) <= own_threads(before["thread_names"]),
        "threads bounded (none added in the run's second half)": later_peak <= first_peak,
        "open descriptors back to idle": after["fds"] <= before["fds"],
        "RSS growth after warm-up under 1% per 10 minutes": growth < 1.0,
        "the server drained and exited 0": report["server_exit_code"] == 0,
    }
    report["rss_growth_pct_per_10min_after_warmup"] = growth
    report["checks"] = checks
    for name, ok in checks.items():
        print(("PASS " if ok else "FAIL ") + name)
    rss0 = samples[0]["rss_mb"] if samples else 0
    print(f"{report['calls']} calls in {minutes:g} min by {report['clients']} clients; RSS {rss0} -> "
          f"{after['rss_mb']} MB, growth after warm-up {growth:.2f}% per 10 min; threads "
          f"{before['threads']} -> {after['threads']} (first half's peak {first_peak}, second half's {later_peak}), "
          f"fds {before['fds']} -> {after['fds']} (idle again {after['settled_after_s']} s after the last call)")
    for f in report["failures"][:20]:
        print("  " + f)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    json.dump(report, open(out, "w"), indent=1)
    print("wrote", out)
    return 0 if all(checks.values()) else 1


def own_threads(names):
    return sum(n for name, n in names.items() if name.startswith("blip2"))


if args.recheck:
    saved = json.load(open(args.recheck))
    saved.setdefault("checks_at_run", saved.get("checks"))
    saved.setdefault("failure_count", len(saved["failures"]))
    if "server_exit_code" not in saved:  # reports from before it was saved
        saved["server_exit_code"] = 0 if saved["checks_at_run"]["the server drained and exited 0"] else 1
    sys.exit(evaluate(saved, args.recheck))


sys.path.insert(0, os.path.join(args.build, "clients", "python"))
import grpc  # noqa: E402
import blip2_pb2 as pb  # noqa: E402
import blip2_pb2_grpc as pb_grpc  # noqa: E402

C = grpc.StatusCode
images = {n: open(os.path.join(IMAGES, n), "rb").read() for n in ("chelsea.jpg", "coffee.jpg", "tiny_upscale.png",
                                                                   "camera_gray.png", "half_transparent.png")}

# --- the server ------------------------------------------------------------------------------
tmp = tempfile.mkdtemp()
ports_file = os.path.join(tmp, "ports")
server = subprocess.Popen([os.path.join(args.build, "server", "blip2"), "serve", "--config",
                           os.path.join(ROOT, "configs", "tiny-opt-cpu.textproto"),
                           "--retrieval_model_dir", os.path.join(ROOT, "tests", "fixtures", "blip2-tiny-itm"),
                           "--port", "0", "--metrics_port", "0", "--http_port", "0", "--port_file", ports_file,
                           "--limits.max_queue_wait_ms", "100",
                           "--log_level", "warn"], cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=open(os.path.join(tmp, "server.log"), "w"))
atexit.register(lambda: server.poll() is None and server.kill())  # never leave it behind
for _ in range(600):
    if os.path.exists(ports_file) and os.path.getsize(ports_file) > 0:
        break
    time.sleep(0.1)
grpc_port, metrics_port, http_port = open(ports_file).read().split()
channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}", options=[("grpc.max_receive_message_length", -1)])
stub = pb_grpc.Blip2Stub(channel)


def metric(name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    m = re.search(r"^" + re.escape(name) + r" ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def thread_names():
    names = {}
    for tid in os.listdir(f"/proc/{server.pid}/task"):
        try:
            n = open(f"/proc/{server.pid}/task/{tid}/comm").read().strip()
        except OSError:
            continue
        names[n] = names.get(n, 0) + 1
    return names


def process_sample():
    status = open(f"/proc/{server.pid}/status").read()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
    fds = len(os.listdir(f"/proc/{server.pid}/fd"))
    return {"t": round(time.time() - start, 1), "rss_mb": round(rss, 1), "threads": threads, "fds": fds}


# --- scenarios: each returns (status name, allowed?) -------------------------------------------
def opts(**kw):
    return pb.DecodingOptions(**kw)


def img(name=None):
    return pb.Image(data=images[name or random.choice(list(images))])


def caption_greedy():
    stub.Caption(pb.CaptionRequest(image=img(), options=opts(max_new_tokens=random.randint(1, 24)),
                                   priority=random.randint(0, 3)), timeout=60)


def stream_sampled():
    for _ in stub.Generate(pb.GenerateRequest(image=img(), prompt="a photo of", options=opts(
            max_new_tokens=20, do_sample=True, temperature=0.8, seed=random.randint(0, 99))), timeout=60):
        pass


def beams():
    stub.Caption(pb.CaptionRequest(image=img(), options=opts(max_new_tokens=12, num_beams=3, num_return_sequences=2)),
                 timeout=60)


def batch():
    items = [pb.BatchItem(image=img()), pb.BatchItem(image=pb.Image(data=b"not an image")), pb.BatchItem(image=img())]
    results = list(stub.GenerateBatch(pb.GenerateBatchRequest(items=items, options=opts(max_new_tokens=8)),
                                      timeout=60))
    bad = [r for r in results if r.index == 1]
    assert len(results) == 3 and bad and bad[0].code == C.INVALID_ARGUMENT.value[0], results


def register_flow():
    name = random.choice(["chelsea.jpg", "coffee.jpg"])  # shared by every client
    reg = stub.RegisterImage(pb.RegisterImageRequest(data=images[name], ttl_seconds=60), timeout=60)
    stub.Caption(pb.CaptionRequest(image=pb.Image(image_id=reg.image_id), options=opts(max_new_tokens=6)), timeout=60)
    stub.ReleaseImage(pb.ReleaseImageRequest(image_id=reg.image_id), timeout=60)


def retrieval():
    if random.random() < 0.5:
        stub.Match(pb.MatchRequest(image=img(), texts=["a cat", "a cup of coffee", "an astronaut"]), timeout=60)
    else:
        stub.Embed(pb.EmbedRequest(images=[img()], texts=["a cat"]), timeout=60)


def cancelled_stream():
    call = stub.Generate(pb.GenerateRequest(image=img(), options=opts(max_new_tokens=64, min_new_tokens=64)),
                         timeout=60)
    for i, _ in enumerate(call):
        if i == 1:
            call.cancel()
            break


def short_deadline():
    stub.Caption(pb.CaptionRequest(image=img(), options=opts(max_new_tokens=64, min_new_tokens=64)), timeout=0.005)


def slow_reader():
    for _ in stub.Generate(pb.GenerateRequest(image=img(), options=opts(max_new_tokens=16)), timeout=60):
        time.sleep(0.05)


def bad_input():
    kind = random.randint(0, 2)
    if kind == 0:
        stub.Caption(pb.CaptionRequest(image=pb.Image(data=os.urandom(random.randint(1, 2000)))), timeout=60)
    elif kind == 1:
        stub.Caption(pb.CaptionRequest(image=img(), options=opts(num_beams=0)), timeout=60)
    else:
        stub.Caption(pb.CaptionRequest(image=pb.Image(image_id="00000000deadbeef")), timeout=60)


def burst():
    """40 calls at once at mixed priorities: some are refused or shed; each must end once."""
    calls = [stub.Caption.future(pb.CaptionRequest(image=img(), options=opts(max_new_tokens=random.randint(1, 16)),
                                                   priority=random.choice([0, 2, 5])), timeout=60)
             for _ in range(40)]
    codes = set()
    for c in calls:
        try:
            c.result()
            codes.add("OK")
        except grpc.RpcError as e:
            codes.add(e.code().name)
    bad = codes - {"OK", "RESOURCE_EXHAUSTED"}
    assert not bad, bad
    return "OK" if "OK" in codes else "RESOURCE_EXHAUSTED"


def http_chat():
    url = "data:image/jpeg;base64," + base64.b64encode(images["chelsea.jpg"]).decode()
    kind = random.randint(0, 2)
    body = {"model": "blip2-tiny-opt", "max_tokens": 8, "stream": kind == 1,
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]}
    data = b"{not json" if kind == 2 else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{http_port}/v1/chat/completions", data=data,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            text = r.read().decode()
            assert (kind == 1) == ("data: [DONE]" in text), text[:200]
            return "HTTP 200"
    except urllib.error.HTTPError as e:
        return f"HTTP {e.code}"


SCENARIOS = {  # name -> (function, allowed outcomes)
    "caption_greedy": (caption_greedy, {"OK"}),
    "stream_sampled": (stream_sampled, {"OK"}),
    "beams": (beams, {"OK"}),
    "batch_with_bad_item": (batch, {"OK"}),
    "register_caption_release": (register_flow, {"OK"}),
    "retrieval": (retrieval, {"OK"}),
    "cancelled_stream": (cancelled_stream, {"OK", "CANCELLED"}),
    "deadline_5ms": (short_deadline, {"OK", "DEADLINE_EXCEEDED"}),
    "slow_reader": (slow_reader, {"OK"}),
    "bad_input": (bad_input, {"INVALID_ARGUMENT", "NOT_FOUND"}),
    "http_chat": (http_chat, {"HTTP 200", "HTTP 400", "HTTP 429"}),  # 429: RESOURCE_EXHAUSTED
    "burst_40_mixed_priorities": (burst, {"OK"}),
}
# RESOURCE_EXHAUSTED is a clean refusal under load, allowed everywhere.
counts = {name: {} for name in SCENARIOS}
failures = []
lock = threading.Lock()


def run_one(name):
    fn, allowed = SCENARIOS[name]
    try:
        outcome = fn() or "OK"
    except grpc.RpcError as e:
        outcome = e.code().name
    except Exception as e:  # an assertion, or a bug here: counted, never fatal to the soak
        outcome = "ASSERTION"
        with lock:
            failures.append(f"{name}: {type(e).__name__} {str(e)[:300]}")
    with lock:
        counts[name][outcome] = counts[name].get(outcome, 0) + 1
        if outcome not in allowed and outcome != "RESOURCE_EXHAUSTED" and outcome != "ASSERTION":
            failures.append(f"{name}: unexpected {outcome}")


def client(stop_at):
    common = [name for name in SCENARIOS if not name.startswith("burst")]
    while time.time() < stop_at:  # a burst now and then; it refuses many calls of everyone else
        run_one("burst_40_mixed_priorities" if random.random() < 0.02 else random.choice(common))


# --- run -------------------------------------------------------------------------------------
# Warm-up at full load (gRPC grows its executor pools to their cap under
# load; the idle values are taken after that), then the measured run.
warm_up_s = min(60.0, max(10.0, args.minutes * 6))
for name in SCENARIOS:  # every path once
    run_one(name)
warmers = [threading.Thread(target=client, args=(time.time() + warm_up_s,)) for _ in range(args.clients)]
for t in warmers:
    t.start()
warm_peak_threads = 0
start = time.time()  # (restarted below for the measured run)
while any(t.is_alive() for t in warmers):
    warm_peak_threads = max(warm_peak_threads, process_sample()["threads"])
    time.sleep(1)
for t in warmers:
    t.join()
counts = {name: {} for name in SCENARIOS}  # the warm-up's calls are not the soak's
time.sleep(3)
start = time.time()
idle_before = process_sample()
idle_before.update(kv=metric("blip2_kv_cache_blocks_used"), registered=metric("blip2_registered_images"),
                   thread_names=thread_names())
stop_at = start + args.minutes * 60
threads = [threading.Thread(target=client, args=(stop_at,)) for _ in range(args.clients)]
for t in threads:
    t.start()
samples = []
while any(t.is_alive() for t in threads):
    samples.append(process_sample())
    for _ in range(10):
        if not any(t.is_alive() for t in threads):
            break
        time.sleep(1)
for t in threads:
    t.join()
# Back to idle: wait (up to 2 minutes) for everything to settle, and say how long it took.
ended = time.time()
while True:
    idle_after = process_sample()
    idle_after.update(kv=metric("blip2_kv_cache_blocks_used"), registered=metric("blip2_registered_images"),
                      in_flight=metric("blip2_calls_in_flight"), registrations=metric("blip2_image_registrations"),
                      queued=metric("blip2_admission_queue_requests"), shed=metric("blip2_requests_shed_total"),
                      pins=metric("blip2_image_cache_pins"))
    settled = (idle_after["kv"] == 0 and idle_after["registered"] == 0 and idle_after["in_flight"] == 0 and
               idle_after["queued"] == 0 and idle_after["pins"] == 0 and
               own_threads(thread_names()) <= own_threads(idle_before["thread_names"]) and
               idle_after["fds"] <= idle_before["fds"])
    if settled or time.time() - ended > 120:
        break
    time.sleep(1)
idle_after["settled_after_s"] = round(time.time() - ended, 1)
idle_after["thread_names"] = thread_names()
server.terminate()
server_rc = server.wait(timeout=60)

report = {"benchmark": "soak", "minutes": args.minutes, "clients": args.clients,
          "calls": sum(sum(c.values()) for c in counts.values()), "outcomes": counts, "failures": failures[:100],
          "failure_count": len(failures), "idle_before": idle_before, "idle_after": idle_after,
          "warm_up_peak_threads": warm_peak_threads, "server_exit_code": server_rc, "samples": samples}
sys.exit(evaluate(report, args.out))

