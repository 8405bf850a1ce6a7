#!/usr/bin/env python3
"""Kubernetes capture: `ballast backup kube` against kubectl, on the test API server.

Run (from the repository root):

    cargo build --release -p ballast -p ballast-tests --bin ballast --bin test-apiserver
    python3 tests/benchmarks/kube.py --out /tmp/kube-bench.json

Method
- The test API server (tests/src/apiserver/, release build, 2 threads) on loopback,
  seeded with the dataset of the capture issue: ConfigMaps and Secrets of 1-8 KiB in
  50 namespaces (43,000 each), 10,000 custom objects of two CRDs, 2,000 Deployments
  and 2,000 Services: about 100,000 objects. A second server holds a quarter of it
  (25,000 objects) for the memory comparison.
- The peer is the reference guide's way to export resources: `kubectl get RESOURCE
  -A -o json > FILE` for every resource `kubectl api-resources --verbs=list,get`
  names (kubectl lists in pages of 500, as ballast does). ballast is `ballast backup
  kube` into a fresh local repository (page size 500, 4 resources at once).
- Each pair runs back to back, peer first; `--runs` pairs. Figures are wall time and
  peak RSS (wait4, measure.py). The server's CPU time during each run (utime+stime
  from /proc) is reported as a share of the run's wall time, so that the figure is
  known to measure the client.
- Then: a second backup with nothing changed, and one after 1% of the ConfigMaps and
  Secrets changed (`POST /_test/mutate`): stored bytes as a share of the first's.

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
import urllib.request
from pathlib import Path

from measure import run_measured

ROOT = Path(__file__).resolve().parents[2]
BALLAST = ROOT / "target/release/ballast"
SERVER = ROOT / "target/release/test-apiserver"
FULL = {"namespaces": 50, "configmaps": 43000, "secrets": 43000, "custom": 10000,
        "deployments": 2000, "services": 2000, "min_size": 1024, "max_size": 8192, "seed": 1}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def quarter() -> dict:
    d = dict(FULL)
    for k in ("configmaps", "secrets", "custom", "deployments", "services"):
        d[k] = FULL[k] // 4
    return d


class Server:
    def __init__(self, work: Path, dataset: dict | None):
        self.kubeconfig = work / "kubeconfig"
        args = [str(SERVER), "--threads", "2", "--kubeconfig", str(self.kubeconfig)]
        if dataset is not None:
            args += ["--seed", json.dumps(dataset)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        if not self.url:
            raise SystemExit(f"the test API server did not start: {self.proc.stderr.read()}")
        self.objects = self.stats()["objects"]

    def stats(self) -> dict:
        return json.loads(urllib.request.urlopen(f"{self.url}/_test/stats").read())

    def mutate(self, fraction: float) -> int:
        req = urllib.request.Request(f"{self.url}/_test/mutate?fraction={fraction}", method="POST", data=b"")
        return json.loads(urllib.request.urlopen(req).read())["changed"]

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def kubectl_export(server: Server, out: Path) -> dict:
    out.mkdir()
    env = dict(os.environ, KUBECONFIG=str(server.kubeconfig), OUT=str(out))
    script = ('for r in $(kubectl api-resources --verbs=list,get -o name); do '
              'kubectl get "$r" -A -o json > "$OUT/$r.json" || exit 1; done')
    cpu = server.cpu_seconds()
    seconds, rss, _ = run_measured(["bash", "-c", script], env=env)
    server_cpu = server.cpu_seconds() - cpu
    size = sum(f.stat().st_size for f in out.iterdir())
    return {"seconds": seconds, "rss_mib": rss / 1024, "server_share": server_cpu / seconds, "bytes": size}


def ballast_backup(server: Server, repo: Path, env: dict) -> dict:
    cpu = server.cpu_seconds()
    seconds, rss, stdout = run_measured(
        [str(BALLAST), "--repo", str(repo), "backup", "kube", "--kubeconfig", str(server.kubeconfig), "--json"], env=env)
    server_cpu = server.cpu_seconds() - cpu
    r = json.loads(stdout)
    s = r["snapshot"]["summary"]
    return {"seconds": seconds, "rss_mib": rss / 1024, "server_share": server_cpu / seconds,
            "objects": s["files"], "bytes_stored": s["bytes_stored"], "complete": r["manifest"]["complete"]}


def fresh_repo(work: Path, env: dict, name: str) -> Path:
    repo = work / name
    subprocess.run([str(BALLAST), "--repo", str(repo), "repo", "init"], env=env, check=True, capture_output=True)
    return repo


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    for p in (BALLAST, SERVER):
        if not p.exists():
            raise SystemExit(f"{p} is missing: cargo build --release -p ballast -p ballast-tests --bin ballast --bin test-apiserver")
    results: dict = {"kubectl": subprocess.run(["kubectl", "version", "--client"], capture_output=True, text=True).stdout.split("\n")[0]}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        env = dict(os.environ, BALLAST_PASSWORD="bench", RUST_LOG="ballast=warn")
        # Memory at a quarter of the objects.
        log("seeding 25,000 objects")
        (work / "q").mkdir()
        small = Server(work / "q", quarter())
        r = ballast_backup(small, fresh_repo(work, env, "repo-q"), env)
        k = kubectl_export(small, work / "kubectl-q")
        results["quarter"] = {"objects": small.objects, "ballast": r, "kubectl": k}
        log(f"25k: ballast {r['seconds']:.1f}s {r['rss_mib']:.0f} MiB; kubectl {k['seconds']:.1f}s {k['rss_mib']:.0f} MiB")
        small.stop()

        log("seeding 100,000 objects")
        (work / "f").mkdir()
        full = Server(work / "f", FULL)
        log(f"{full.objects} objects")
        runs = []
        for i in range(args.runs):
            k = kubectl_export(full, work / f"kubectl-{i}")
            repo = fresh_repo(work, env, f"repo-{i}")
            b = ballast_backup(full, repo, env)
            runs.append({"kubectl": k, "ballast": b, "ratio": k["seconds"] / b["seconds"]})
            log(f"run {i}: kubectl {k['seconds']:.1f}s ({k['rss_mib']:.0f} MiB, server {k['server_share']:.0%}); "
                f"ballast {b['seconds']:.1f}s ({b['rss_mib']:.0f} MiB, server {b['server_share']:.0%}, "
                f"{b['objects'] / b['seconds']:.0f} objects/s); {k['seconds'] / b['seconds']:.2f}x")
        results["full"] = {"objects": full.objects, "runs": runs}
        # Incremental: the last run's repository.
        first = runs[-1]["ballast"]["bytes_stored"]
        same = ballast_backup(full, repo, env)
        changed = full.mutate(0.01)
        one = ballast_backup(full, repo, env)
        results["incremental"] = {
            "first_bytes_stored": first,
            "unchanged": same["bytes_stored"], "unchanged_share": same["bytes_stored"] / first,
            "changed_objects": changed,
            "one_percent": one["bytes_stored"], "one_percent_share": one["bytes_stored"] / first,
            "seconds_unchanged": same["seconds"], "seconds_one_percent": one["seconds"],
        }
        log(f"unchanged: {same['bytes_stored']} B ({same['bytes_stored'] / first:.3%}); "
            f"1% ({changed} objects): {one['bytes_stored']} B ({one['bytes_stored'] / first:.3%})")
        full.stop()
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
