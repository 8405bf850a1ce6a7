#!/usr/bin/env python3
"""Kubernetes restore: `ballast restore kube` against `kubectl create -f`, on the test
API server.

Run (from the repository root):

    cargo build --release -p ballast -p ballast-tests --bin ballast --bin test-apiserver
    python3 tests/benchmarks/kube_restore.py --out /tmp/kube-restore-bench.json

Method
- Two data sets, as issue 11 names them: 30,000 Secrets of 1-8 KiB in one namespace,
  and the capture benchmark's 100,000 objects (ConfigMaps and Secrets in 50
  namespaces, custom objects of two CRDs, Deployments, Services). `--only secrets`
  runs the first alone.
- A source test API server (release build, 2 threads) is seeded and backed up with
  `ballast backup kube`; `ballast kube export` writes the same objects as clean
  manifests. The peer is `kubectl create -R -f` of those manifests into an empty
  test API server (the cluster-scoped directory first, then the namespaces', as
  kubectl maps every kind before it creates anything); ballast is `ballast restore kube SNAPSHOT` into another empty
  one. Both clients run without a client-side rate limit (`--qps 0` for ballast; the
  kubectl of this machine does not limit writes, as its server-side flow control
  would), so that the figures compare the clients.
- Each pair runs back to back, kubectl first; `--runs` pairs. Figures: wall time,
  objects per second, peak RSS (wait4, measure.py), and ballast's p99 time per
  object from its report (`ms`, from the first request for an object to its outcome).

Only the Python 3.11 standard library is used.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kube import BALLAST, SERVER, FULL, Server, log, fresh_repo
from measure import run_measured_cpu

SECRETS = {"namespaces": 1, "configmaps": 0, "secrets": 30000, "custom": 0,
           "deployments": 0, "services": 0, "min_size": 1024, "max_size": 8192, "seed": 2}


def empty(work: Path, name: str) -> Server:
    d = work / name
    d.mkdir()
    return Server(d, None)


def kubectl_create(target: Server, manifests: Path) -> dict:
    env = dict(os.environ, KUBECONFIG=str(target.kubeconfig))
    before = target.objects
    # kubectl maps every file's kind before it creates anything, so custom objects
    # fail before their CRDs exist: the cluster-scoped objects (CRDs, namespaces)
    # go first, then every namespace's directory, in a second kubectl.
    script = (f'cd "{manifests}" && kubectl create --validate=false -R -f _cluster >/dev/null && '
              'kubectl create --validate=false -R $(for d in */; do [ "$d" = _cluster/ ] || '
              'printf -- "-f %s " "$d"; done) >/dev/null')
    server_cpu = target.cpu_seconds()
    seconds, rss, _, cpu = run_measured_cpu(["bash", "-c", script], env=env)
    server_cpu = target.cpu_seconds() - server_cpu
    created = target.stats()["objects"] - before
    return {"seconds": seconds, "rss_mib": rss / 1024, "created": created,
            "client_cpu": cpu, "server_cpu": server_cpu}


def ballast_restore(target: Server, repo: Path, snapshot: str, env: dict) -> dict:
    before = target.objects
    server_cpu = target.cpu_seconds()
    seconds, rss, out, cpu = run_measured_cpu(
        [str(BALLAST), "--repo", str(repo), "restore", "kube", snapshot, "--kubeconfig",
         str(target.kubeconfig), "--qps", "0", "--json"], env=env)
    server_cpu = target.cpu_seconds() - server_cpu
    r = json.loads(out)
    created = target.stats()["objects"] - before
    ms = sorted(o["ms"] for o in r["objects"] if o["outcome"] == "created")
    p99 = ms[int(len(ms) * 0.99) - 1] if ms else 0.0
    return {"seconds": seconds, "rss_mib": rss / 1024, "created": created,
            "client_cpu": cpu, "server_cpu": server_cpu,
            "counts": r["counts"], "requests": r["requests"], "p99_ms": p99,
            "median_ms": ms[len(ms) // 2] if ms else 0.0}


def one(work: Path, name: str, dataset: dict, runs: int, env: dict) -> dict:
    log(f"{name}: seeding")
    (work / name).mkdir()
    source = Server(work / name, dataset)
    repo = fresh_repo(work, env, f"repo-{name}")
    out = subprocess.run([str(BALLAST), "--repo", str(repo), "backup", "kube", "--kubeconfig",
                          str(source.kubeconfig), "--json"], env=env, check=True,
                         capture_output=True, text=True).stdout
    snapshot = json.loads(out)["snapshot_id"]
    manifests = work / f"manifests-{name}"
    subprocess.run([str(BALLAST), "--repo", str(repo), "kube", "export", snapshot, "--to",
                    str(manifests)], env=env, check=True, capture_output=True)
    files = sum(1 for p in manifests.rglob("*") if p.is_file())
    source.stop()
    log(f"{name}: {source.objects} objects in the source, {files} manifests")
    results = []
    for i in range(runs):
        t = empty(work, f"{name}-kubectl-{i}")
        k = kubectl_create(t, manifests)
        t.stop()
        t = empty(work, f"{name}-ballast-{i}")
        b = ballast_restore(t, repo, snapshot, env)
        t.stop()
        ratio = k["seconds"] / b["seconds"]
        results.append({"kubectl": k, "ballast": b, "ratio": ratio})
        log(f"{name} run {i}: kubectl {k['seconds']:.1f}s ({k['created']} created, {k['rss_mib']:.0f} MiB); "
            f"ballast {b['seconds']:.1f}s ({b['created']} created, {b['created'] / b['seconds']:.0f} objects/s, "
            f"p99 {b['p99_ms']:.1f} ms, {b['rss_mib']:.0f} MiB); {ratio:.2f}x; CPU s client/server: "
            f"kubectl {k['client_cpu']:.1f}/{k['server_cpu']:.1f}, ballast {b['client_cpu']:.1f}/{b['server_cpu']:.1f}")
    return {"source_objects": source.objects, "manifests": files, "runs": results}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--only", choices=["secrets", "full"])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    for p in (BALLAST, SERVER):
        if not p.exists():
            raise SystemExit(f"{p} is missing: cargo build --release -p ballast -p ballast-tests --bin ballast --bin test-apiserver")
    results: dict = {"kubectl": subprocess.run(["kubectl", "version", "--client"], capture_output=True,
                                               text=True).stdout.split("\n")[0]}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        env = dict(os.environ, BALLAST_PASSWORD="bench", RUST_LOG="ballast=warn")
        if args.only in (None, "secrets"):
            results["secrets"] = one(work, "secrets", SECRETS, args.runs, env)
        if args.only in (None, "full"):
            results["full"] = one(work, "full", FULL, args.runs, env)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
