#!/usr/bin/env python3
"""Checks deploy/ against the server it deploys: every Kubernetes manifest
parses; the Deployment's ports, health probes (/healthz over HTTP when the
gRPC port speaks TLS, which the kubelet's gRPC probe cannot), the Secret
holding every security file the config names, resources, volumes and
grace period agree with the server config in the ConfigMap (grace period >=
preStop sleep + drain_grace_seconds); Services, PodDisruptionBudget and the
autoscaler select or target the Deployment; the autoscaler's metric is a gauge
the server exports; the Dockerfile's entrypoint reads the mounted config.
Then it breaks copies of the manifests on purpose and checks each break is
caught, so the checks themselves are tested.

    python3 validate_manifests.py REPO_ROOT
"""
import copy
import glob
import os
import re
import sys

import yaml


def load(root):
    docs = {}
    for path in sorted(glob.glob(os.path.join(root, "deploy", "k8s", "*.yaml"))):
        if os.path.basename(path) == "kustomization.yaml":
            with open(path) as f:
                docs["kustomization"] = yaml.safe_load(f)
            continue
        with open(path) as f:
            docs[os.path.basename(path)] = [d for d in yaml.safe_load_all(f) if d is not None]
    return docs


def by_kind(docs, kind):
    return [d for name, ds in docs.items() if name != "kustomization" for d in ds
            if isinstance(d, dict) and d.get("kind") == kind]


def config_value(text, field, cast=str):
    m = re.search(rf"^\s*{field}:\s*\"?([^\"\n]+)\"?\s*$", text, re.M)
    if not m:
        raise AssertionError(f"server config has no {field}")
    return cast(m.group(1))


def check(docs, root):
    """Returns the list of problems (empty when all is well)."""
    problems = []

    def need(cond, what):
        if not cond:
            problems.append(what)

    (cm,) = by_kind(docs, "ConfigMap")
    server = cm["data"]["server.textproto"]
    port, metrics_port = config_value(server, "port", int), config_value(server, "metrics_port", int)
    drain = config_value(server, "drain_grace_seconds", float)
    model_dir = config_value(server, "model_dir")
    (dep,) = by_kind(docs, "Deployment")
    labels = dep["spec"]["selector"]["matchLabels"]
    pod = dep["spec"]["template"]
    need(all(pod["metadata"]["labels"].get(k) == v for k, v in labels.items()), "pod labels match the selector")
    (c,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    need(ports.get("grpc") == port, f"container port grpc == config port {port}")
    need(ports.get("metrics") == metrics_port, f"container port metrics == config metrics_port {metrics_port}")
    tls = re.search(r"^\s*tls_cert_file:", server, re.M) is not None
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = c.get(probe, {})
        http = p.get("httpGet", {})
        on_healthz = http.get("path") == "/healthz" and http.get("port") in ("metrics", metrics_port)
        if tls:
            need(on_healthz, f"{probe} asks /healthz on the metrics port (the gRPC port speaks TLS)")
        else:
            need(on_healthz or p.get("grpc", {}).get("port") == port,
                 f"{probe} uses grpc.health.v1 on port {port} or /healthz on the metrics port")
    # Every file the security block names comes from a mounted Secret that the
    # kustomization generates with that file.
    volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    generated = {g["name"]: [os.path.basename(f) for f in g.get("files", [])]
                 for g in docs.get("kustomization", {}).get("secretGenerator", [])}
    for path in re.findall(r'^\s*\w+_file:\s*"([^"]+)"', server, re.M):
        mount = next((m for m in c.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")), None)
        secret = volumes.get(mount["name"], {}).get("secret", {}).get("secretName") if mount else None
        need(secret is not None, f"{path} is on a mounted Secret")
        need(os.path.basename(path) in generated.get(secret, []),
             f"the kustomization's Secret {secret} holds {os.path.basename(path)}")
    res = c.get("resources", {})
    for key in ("cpu", "memory", "nvidia.com/gpu"):
        need(key in res.get("requests", {}), f"resources.requests.{key}")
    need(res.get("limits", {}).get("nvidia.com/gpu") == 1, "one GPU per pod (limits)")
    pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    sleep = float(pre[-1]) if pre and pre[0].endswith("sleep") else 0.0
    need(sleep > 0, "a preStop sleep lets endpoints drop the pod before SIGTERM")
    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
    need(grace >= sleep + drain, f"terminationGracePeriodSeconds {grace} >= preStop {sleep} + drain {drain}")
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    need("/etc/blip2" in mounts, "the config is mounted at /etc/blip2")
    need(any(model_dir.startswith(p + "/") for p in mounts), f"model_dir {model_dir} is on a mounted volume")
    need(pod["spec"].get("securityContext", {}).get("runAsNonRoot") is True, "runs as non-root")

    services = by_kind(docs, "Service")
    need(any(s["spec"].get("clusterIP") == "None" for s in services), "a headless Service for client-side balancing")
    need(any(s["spec"].get("clusterIP") != "None" for s in services), "a ClusterIP Service")
    for s in services:
        need(s["spec"]["selector"] == labels, f"Service {s['metadata']['name']} selects the pods")
        for p in s["spec"]["ports"]:
            need(p["targetPort"] in ports, f"Service {s['metadata']['name']} targets a named container port")
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    need(pdb["spec"]["selector"]["matchLabels"] == labels, "the PodDisruptionBudget selects the pods")
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler")
    need(hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"], "the autoscaler targets the Deployment")
    with open(os.path.join(root, "server", "grpc", "server_metrics.cc")) as f:
        exported = set(re.findall(r'Gauge\(\s*"([a-z0-9_]+)"', f.read()))
    for m in hpa["spec"]["metrics"]:
        name = m["pods"]["metric"]["name"]
        need(name in exported, f"the autoscaler's metric {name} is a gauge the server exports")
    with open(os.path.join(root, "deploy", "Dockerfile")) as f:
        dockerfile = f.read()
    need('"--config", "/etc/blip2/server.textproto"' in dockerfile, "the image reads the mounted config")
    need("server.textproto" in cm["data"], "the ConfigMap key is server.textproto")
    scrape = docs["prometheus-scrape.yaml"][0]["scrape_configs"][0]
    need(any(r.get("regex") == "metrics" for r in scrape["relabel_configs"]), "Prometheus scrapes the metrics port")
    return problems


def main():
    root = sys.argv[1]
    docs = load(root)
    problems = check(docs, root)
    for p in problems:
        print("FAIL:", p)
    # The checks must catch breaks: each mutation below must produce a problem.
    def mutated(edit):
        d = copy.deepcopy(docs)
        edit(d)
        return check(d, root)
    dep = lambda d: by_kind(d, "Deployment")[0]["spec"]["template"]["spec"]
    breaks = {
        "grace period below the drain": lambda d: dep(d).update(terminationGracePeriodSeconds=5),
        "gRPC probe against the TLS port": lambda d: dep(d)["containers"][0].update(readinessProbe={"grpc": {"port": 50051}}),
        "probe on another path": lambda d: dep(d)["containers"][0].update(
            livenessProbe={"httpGet": {"path": "/metrics", "port": "metrics"}}),
        "secrets not mounted": lambda d: dep(d)["containers"][0].update(
            volumeMounts=[m for m in dep(d)["containers"][0]["volumeMounts"] if m["name"] != "secrets"]),
        "key file not in the Secret": lambda d: d["kustomization"]["secretGenerator"][0]["files"].remove("secrets/api_keys"),
        "no GPU limit": lambda d: dep(d)["containers"][0]["resources"]["limits"].pop("nvidia.com/gpu"),
        "service selecting nothing": lambda d: by_kind(d, "Service")[0]["spec"].update(selector={"app": "x"}),
    }
    for name, edit in breaks.items():
        if not mutated(edit):
            problems.append(f"the checks missed a deliberate break: {name}")
            print("FAIL: the checks missed", name)
    if problems:
        return 1
    print(f"deploy/k8s: {sum(len(v) for k, v in docs.items() if k != 'kustomization')} manifests valid; {len(breaks)} deliberate breaks caught")
    return 0


if __name__ == "__main__":
    sys.exit(main())
