#!/usr/bin/env python3
"""Benchmark ballast against restic on the same generated data, in the same run.

Run (from the repository root, after `cargo build --release`):

    python3 tests/benchmarks/repo_vs_restic.py                 # 3 GiB, both tools
    python3 tests/benchmarks/repo_vs_restic.py --size-gib 0.5 --out bench.json
    python3 tests/benchmarks/repo_vs_restic.py --only restic --size-gib 0.2

Method
------
1. Data set.  A mixed, deterministic (seeded) data set of about --size-gib GiB is
   generated once and cached in --data (a marker file records the generation
   parameters; a matching marker skips regeneration).  The backed-up tree is
   DATA/tree and is made of roughly:
     * 35% compressible text: Kubernetes-like JSON and YAML manifests and
       service log files (varied words, numbers, uuids, timestamps);
     * 25% already-compressed data: gzip (level 6) archives of JSON event
       lines that carry base64 payloads;
     * 25% incompressible random data in a few big files (100-500 MiB);
     * 15% many small files (1-64 KiB; text and binary) in nested directories.
2. For each tool, a fresh repository is created under --work (same disk as the
   data by default; the work directory is wiped at the start of every run):
     * init the repository (untimed);
     * initial backup                       (timed, peak RSS);
     * re-backup of unchanged data          (timed, peak RSS);
     * re-backup with the parent/metadata shortcut disabled, so every byte is
       re-read and re-chunked: restic `--force`, ballast `--force-reread`
                                            (timed, peak RSS);
     * restore of the latest snapshot into an empty directory (timed, peak
       RSS), then verification of the restored tree against the source: the
       full file list with sizes, plus sha256 of ~50 sampled files and of every
       big file.  Any difference aborts the benchmark.
   The repository size on disk (apparent size, like `du -sb`) is recorded
   after the initial backup and again at the end.
3. Timing is wall clock around the child process.  Peak RSS is the child's
   ru_maxrss as returned by os.wait4() (KiB on Linux; it covers the child and
   any descendants it waited for).  Throughput is source bytes / wall seconds
   for every operation, including restore.

Caching: page cache cannot be dropped reliably without root, so instead
`sync` is called before every timed step and, before each tool's runs, the
whole source tree is read once (untimed, like `cat > /dev/null`).  Both tools
therefore read the source from a warm page cache; the numbers measure the
tools' CPU/IO pipelines, not cold-disk reads.  Each tool also gets its own,
initially empty, cache directory (XDG_CACHE_HOME under --work).

Ratios: "speedup" is restic_seconds / ballast_seconds (>1 means ballast is
faster); "RSS ratio" is restic_peak_rss / ballast_peak_rss (>1 means ballast
uses less memory).

Only the Python 3.11 standard library is used.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import gzip
import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

# Bump when the generator changes so that cached data sets are regenerated.
GENERATOR_VERSION = 2
MARKER_NAME = "ballast-bench-data.json"
WORK_MARKER_NAME = ".ballast-bench-work"
DEFAULT_DATA = "/tmp/ballast-bench-data"
DEFAULT_WORK = "/tmp/ballast-bench-work"
DEFAULT_BALLAST = "/work/main/target/release/ballast"
RESTIC = "restic"
PASSWORD = "bench"

# Share of the data set per category (must sum to 1).
SHARE_TEXT = 0.35
SHARE_GZIP = 0.25
SHARE_RANDOM = 0.25
SHARE_SMALL = 0.15

# Files at least this large are always hashed during verification.
BIG_FILE = 32 * MIB
HASH_SAMPLE = 50

VERBOSE = False


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def debug(msg: str) -> None:
    if VERBOSE:
        log(msg)


class BenchError(Exception):
    """A failure that should end the benchmark with a clear message."""


# --------------------------------------------------------------------------
# Data generation
# --------------------------------------------------------------------------

_SYLLABLES = (
    "ka ri to mo na shi ter ven dal por lex qua zen bri cor fal gen hol "
    "jun kel mar nor pil ras sol tur vim wex yar zor ath eb ic ol um "
    "an est ing ion er al ux ly ex ra"
).split()

_LEVELS = ["INFO"] * 12 + ["DEBUG"] * 6 + ["WARN"] * 3 + ["ERROR"]
_METHODS = ["GET"] * 8 + ["POST"] * 3 + ["PUT", "DELETE", "PATCH"]
_STATUSES = [200] * 20 + [201, 204, 301, 304, 400, 401, 403, 404, 404, 409, 429, 500, 502, 503]
_KINDS = ["Deployment", "Service", "ConfigMap", "StatefulSet", "Ingress", "CronJob", "Secret"]


class TextGen:
    """Seeded generator of varied, compressible, realistic-looking text."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.words = sorted(
            {"".join(rng.choices(_SYLLABLES, k=rng.randint(1, 4))) for _ in range(6000)}
        )
        self.namespaces = [self._name(2) for _ in range(40)]
        self.services = [self._name(3) for _ in range(150)]
        self.images = [
            f"registry.{self.rng.choice(self.words)}.io/{self._name(2)}/{self._name(2)}"
            for _ in range(120)
        ]
        self.paths = [
            "/" + "/".join(rng.choices(self.words, k=rng.randint(1, 4))) for _ in range(600)
        ]
        self.clock = 1_700_000_000 + rng.randrange(10_000_000)
        self._ts_cache = (-1, "")

    def _name(self, parts: int) -> str:
        return "-".join(self.rng.choices(self.words, k=parts))

    def uuid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"

    def sentence(self, lo: int = 3, hi: int = 12) -> str:
        return " ".join(self.rng.choices(self.words, k=self.rng.randint(lo, hi)))

    def timestamp(self) -> str:
        self.clock += self.rng.random() * 0.05
        sec = int(self.clock)
        if self._ts_cache[0] != sec:
            self._ts_cache = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
        return f"{self._ts_cache[1]}.{int((self.clock - sec) * 1e6):06d}Z"

    # --- log lines -------------------------------------------------------

    def log_lines(self, approx_bytes: int) -> str:
        """Service log lines, mixing plain text, access-log and JSON styles."""
        rng, out, size = self.rng, [], 0
        svc = rng.choice(self.services)
        pod = f"{svc}-{rng.getrandbits(40):010x}"
        while size < approx_bytes:
            style = rng.random()
            ts = self.timestamp()
            if style < 0.45:
                line = (
                    f"{ts} {rng.choice(_LEVELS):5} [{pod}] {self.sentence()} "
                    f"id={self.uuid()} took={rng.randint(0, 5000)}ms\n"
                )
            elif style < 0.8:
                line = (
                    f'10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)} - - [{ts}] '
                    f'"{rng.choice(_METHODS)} {rng.choice(self.paths)}?page={rng.randint(1, 400)} HTTP/1.1" '
                    f"{rng.choice(_STATUSES)} {rng.randint(0, 200_000)} {rng.random() * 2:.4f}\n"
                )
            else:
                line = json.dumps(
                    {
                        "ts": ts,
                        "level": rng.choice(_LEVELS).lower(),
                        "msg": self.sentence(),
                        "trace_id": f"{rng.getrandbits(64):016x}",
                        "namespace": rng.choice(self.namespaces),
                        "user": rng.choice(self.words),
                        "bytes": rng.randint(0, 10**7),
                    }
                ) + "\n"
            out.append(line)
            size += len(line)
        return "".join(out)

    # --- Kubernetes-like manifests ---------------------------------------

    def manifest(self) -> dict:
        rng = self.rng
        name = self._name(2)
        labels = {f"app.{rng.choice(self.words)}.io/{rng.choice(self.words)}": rng.choice(self.words)
                  for _ in range(rng.randint(1, 5))}
        containers = []
        for _ in range(rng.randint(1, 3)):
            containers.append({
                "name": self._name(1),
                "image": f"{rng.choice(self.images)}:v{rng.randint(0, 9)}.{rng.randint(0, 40)}.{rng.randint(0, 99)}",
                "args": [f"--{rng.choice(self.words)}={rng.choice(self.words)}"
                         for _ in range(rng.randint(0, 6))],
                "env": [{"name": rng.choice(self.words).upper() + "_" + rng.choice(self.words).upper(),
                         "value": rng.choice((self.sentence(1, 3), str(rng.randint(0, 65535)), self.uuid()))}
                        for _ in range(rng.randint(0, 10))],
                "ports": [{"containerPort": rng.randint(1024, 65535), "protocol": "TCP"}
                          for _ in range(rng.randint(0, 2))],
                "resources": {
                    "requests": {"cpu": f"{rng.randint(10, 2000)}m", "memory": f"{rng.randint(16, 4096)}Mi"},
                    "limits": {"cpu": f"{rng.randint(100, 4000)}m", "memory": f"{rng.randint(64, 8192)}Mi"},
                },
            })
        return {
            "apiVersion": rng.choice(("apps/v1", "v1", "batch/v1", "networking.k8s.io/v1")),
            "kind": rng.choice(_KINDS),
            "metadata": {
                "name": name,
                "namespace": rng.choice(self.namespaces),
                "uid": self.uuid(),
                "resourceVersion": str(rng.randint(1, 10**9)),
                "creationTimestamp": self.timestamp(),
                "labels": labels,
                "annotations": {"description": self.sentence(5, 25),
                                "checksum/config": f"{rng.getrandbits(256):064x}"},
            },
            "spec": {
                "replicas": rng.randint(1, 12),
                "selector": {"matchLabels": labels},
                "template": {"spec": {"containers": containers,
                                      "nodeSelector": {"zone": rng.choice(self.words)}}},
            },
        }

    def manifests_json(self, approx_bytes: int) -> str:
        out, size = [], 0
        while size < approx_bytes:
            doc = json.dumps(self.manifest(), indent=2) + "\n"
            out.append(doc)
            size += len(doc)
        return "".join(out)

    def manifests_yaml(self, approx_bytes: int) -> str:
        out, size = [], 0
        while size < approx_bytes:
            doc = "---\n" + "".join(_yaml(self.manifest(), 0))
            out.append(doc)
            size += len(doc)
        return "".join(out)

    # --- archived event lines (for gzip) ----------------------------------

    def event_lines(self, approx_bytes: int) -> str:
        """JSON event lines with base64 payloads: compresses only ~1.5-2x."""
        rng, out, size = self.rng, [], 0
        while size < approx_bytes:
            payload = base64.b64encode(rng.randbytes(rng.randint(48, 900))).decode()
            line = json.dumps({
                "ts": self.timestamp(),
                "event": rng.choice(self.words),
                "object": f"{rng.choice(self.namespaces)}/{rng.choice(self.services)}",
                "uid": self.uuid(),
                "note": self.sentence(2, 8),
                "payload": payload,
            }) + "\n"
            out.append(line)
            size += len(line)
        return "".join(out)


def _yaml(value, indent: int):
    """Tiny YAML emitter for the dict/list/scalar shapes produced above."""
    pad = "  " * indent
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                yield f"{pad}{k}:\n"
                yield from _yaml(v, indent + 1)
            else:
                yield f"{pad}{k}: {_scalar(v)}\n"
    else:  # list
        for item in value:
            if isinstance(item, dict) and item:
                lines = list(_yaml(item, indent + 1))
                lines[0] = f"{pad}- " + lines[0].lstrip()
                yield from lines
            else:
                yield f"{pad}- {_scalar(item)}\n"


def _scalar(v) -> str:
    if isinstance(v, dict):
        return "{}"
    if isinstance(v, list):
        return "[]"
    if isinstance(v, str) and (not v or v[0] in "-{[*&!|>'\"%@`" or ": " in v or v.isdigit()):
        return json.dumps(v)
    return str(v)


def _file_sizes(rng: random.Random, total: int, lo: int, hi: int) -> list[int]:
    """Split `total` bytes into file sizes drawn log-uniformly from [lo, hi]."""
    sizes = []
    while total > 0:
        size = int(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        size = min(size, total)
        sizes.append(size)
        total -= size
    return sizes


def _gen_text(root: Path, gen: TextGen, rng: random.Random, budget: int) -> None:
    """~35%: manifests (JSON/YAML) and log files."""
    manifests_budget = budget * 2 // 5
    for i, size in enumerate(_file_sizes(rng, manifests_budget, 256 * KIB, 4 * MIB)):
        ns = gen.namespaces[i % len(gen.namespaces)]
        d = root / "text" / "manifests" / ns
        d.mkdir(parents=True, exist_ok=True)
        if i % 2:
            body = gen.manifests_yaml(size)
            (d / f"{gen._name(2)}-{i}.yaml").write_bytes(body.encode()[:size])
        else:
            body = gen.manifests_json(size)
            (d / f"{gen._name(2)}-{i}.json").write_bytes(body.encode()[:size])
    for i, size in enumerate(_file_sizes(rng, budget - manifests_budget, 4 * MIB, 48 * MIB)):
        svc = gen.services[i % len(gen.services)]
        d = root / "text" / "logs" / svc
        d.mkdir(parents=True, exist_ok=True)
        with open(d / f"{svc}-{i:04d}.log", "wb") as f:
            written = 0
            while written < size:
                chunk = gen.log_lines(min(MIB, size - written)).encode()[: size - written]
                f.write(chunk)
                written += len(chunk)


def _gen_gzip(root: Path, gen: TextGen, rng: random.Random, budget: int) -> None:
    """~25%: gzip (level 6) archives; sizes are of the compressed files."""
    d = root / "archives"
    for i, size in enumerate(_file_sizes(rng, budget, 8 * MIB, 96 * MIB)):
        sub = d / f"{2020 + i % 5}" / f"{1 + i % 12:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"events-{i:04d}.jsonl.gz"
        with open(path, "wb") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz:
                while raw.tell() < size:
                    gz.write(gen.event_lines(MIB).encode())
                    if rng.random() < 0.3:
                        gz.write(gen.log_lines(MIB // 2).encode())


def _gen_random(root: Path, rng: random.Random, budget: int) -> None:
    """~25%: incompressible data in a few big files (100-500 MiB)."""
    d = root / "blobs"
    d.mkdir(parents=True, exist_ok=True)
    for i, size in enumerate(_file_sizes(rng, budget, 100 * MIB, 500 * MIB)):
        with open(d / f"volume-{i:02d}.img", "wb") as f:
            left = size
            while left > 0:
                n = min(MIB, left)
                f.write(rng.randbytes(n))
                left -= n


def _gen_small(root: Path, gen: TextGen, rng: random.Random, budget: int) -> None:
    """~15%: thousands of 1-64 KiB files (text and binary) in nested dirs."""
    text_buf = ""
    leaf, d = -1, root
    for i, size in enumerate(_file_sizes(rng, budget, 1 * KIB, 64 * KIB)):
        if leaf < 0 or rng.random() < 1 / 30:  # leaf directories hold ~30 files on average
            leaf += 1
            d = (root / "small" / gen.namespaces[leaf % 7] / f"{gen.words[leaf // 7 % 11]}-{leaf // 7 % 11}"
                 / f"part-{leaf // 77:03d}")
            d.mkdir(parents=True, exist_ok=True)
        kind = rng.random()
        if kind < 0.6:
            if len(text_buf) < size:
                text_buf += gen.manifests_yaml(256 * KIB) if rng.random() < 0.5 else gen.log_lines(256 * KIB)
            data, text_buf = text_buf[:size].encode(), text_buf[size:]
            name = f"{rng.choice(gen.words)}-{i}.{rng.choice(('yaml', 'txt', 'conf', 'json'))}"
        else:
            data = rng.randbytes(size)
            name = f"{rng.choice(gen.words)}-{i}.{rng.choice(('png', 'bin', 'dat'))}"
        (d / name).write_bytes(data)


def ensure_data(data_dir: Path, size_gib: float, seed: int) -> Path:
    """Generate the data set unless a marker with identical parameters exists."""
    params = {"generator_version": GENERATOR_VERSION, "size_gib": size_gib, "seed": seed}
    marker = data_dir / MARKER_NAME
    tree = data_dir / "tree"
    if marker.exists():
        try:
            if json.loads(marker.read_text()).get("params") == params and tree.is_dir():
                log(f"data: reusing {tree} ({params})")
                return tree
        except json.JSONDecodeError:
            pass
    if data_dir.exists() and any(data_dir.iterdir()):
        if not marker.exists() and not (data_dir / (MARKER_NAME + ".partial")).exists():
            raise BenchError(f"--data {data_dir} is not empty and was not created by this script; "
                             "refusing to wipe it")
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / (MARKER_NAME + ".partial")).write_text(json.dumps(params))

    total = int(size_gib * GIB)
    rng = random.Random(seed)
    gen = TextGen(random.Random(seed + 1))
    log(f"data: generating ~{total / GIB:.2f} GiB into {tree} ...")
    t0 = time.perf_counter()
    steps = [
        ("text", lambda b: _gen_text(tree, gen, rng, b), SHARE_TEXT),
        ("gzip", lambda b: _gen_gzip(tree, gen, rng, b), SHARE_GZIP),
        ("random", lambda b: _gen_random(tree, rng, b), SHARE_RANDOM),
        ("small files", lambda b: _gen_small(tree, gen, rng, b), SHARE_SMALL),
    ]
    for name, fn, share in steps:
        t = time.perf_counter()
        fn(int(total * share))
        log(f"data:   {name:<11} {time.perf_counter() - t:6.1f}s")
    files, nbytes = scan_tree(tree)
    marker.write_text(json.dumps({"params": params, "files": len(files), "bytes": nbytes}, indent=2))
    (data_dir / (MARKER_NAME + ".partial")).unlink()
    log(f"data: {len(files)} files, {nbytes / GIB:.2f} GiB in {time.perf_counter() - t0:.1f}s")
    return tree


# --------------------------------------------------------------------------
# File-tree helpers
# --------------------------------------------------------------------------

def scan_tree(root: Path) -> tuple[dict[str, int], int]:
    """Map of relative file path -> size for regular files, and the total size."""
    files: dict[str, int] = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            p = os.path.join(dirpath, name)
            files[os.path.relpath(p, root)] = os.lstat(p).st_size
    return files, sum(files.values())


def disk_usage(root: Path) -> int:
    """Apparent size of a tree in bytes, like `du -sb` (directories included)."""
    total = os.lstat(root).st_size
    for dirpath, dirs, names in os.walk(root):
        for name in dirs + names:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def warm_cache(root: Path) -> None:
    """Read every file once (untimed) so that all tools start from a warm page cache."""
    t0 = time.perf_counter()
    buf = bytearray(4 * MIB)
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            with open(os.path.join(dirpath, name), "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass
    debug(f"warm-up read took {time.perf_counter() - t0:.1f}s")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(4 * MIB)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def verify_restore(source: Path, restored: Path, seed: int) -> None:
    """Compare file lists and sizes; hash a sample of files plus all big files."""
    if not restored.is_dir():
        raise BenchError(f"restore verification: {restored} does not exist")
    src_files, _ = scan_tree(source)
    dst_files, _ = scan_tree(restored)
    missing = sorted(src_files.keys() - dst_files.keys())
    extra = sorted(dst_files.keys() - src_files.keys())
    wrong_size = sorted(p for p in src_files.keys() & dst_files.keys() if src_files[p] != dst_files[p])
    if missing or extra or wrong_size:
        raise BenchError(
            "restore verification FAILED: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(extra)} extra (e.g. {extra[:3]}), "
            f"{len(wrong_size)} with wrong size (e.g. {wrong_size[:3]})"
        )
    names = sorted(src_files)
    big = [p for p in names if src_files[p] >= BIG_FILE]
    sample = random.Random(seed).sample(names, min(HASH_SAMPLE, len(names)))
    to_hash = sorted(set(big) | set(sample))
    for rel in to_hash:
        if sha256_file(source / rel) != sha256_file(restored / rel):
            raise BenchError(f"restore verification FAILED: content differs for {rel}")
    log(f"verify: OK ({len(src_files)} files and sizes match, {len(to_hash)} files hashed)")


# --------------------------------------------------------------------------
# Running tools
# --------------------------------------------------------------------------

@dataclasses.dataclass
class Measurement:
    """One timed operation of one tool."""

    tool: str
    op: str
    seconds: float
    max_rss_kib: int
    source_bytes: int
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def mib_per_s(self) -> float:
        return self.source_bytes / MIB / self.seconds if self.seconds > 0 else float("inf")

    @property
    def rss_mib(self) -> float:
        return self.max_rss_kib / 1024


def run_measured(cmd: list[str], env: dict[str, str], logs: Path) -> tuple[float, int, str]:
    """Run cmd; return (wall seconds, child peak RSS in KiB, stdout). Raise on failure.

    stdout/stderr go to files (not pipes) so that os.wait4() can reap the child
    directly and report its rusage without any risk of pipe deadlock.
    """
    debug("$ " + " ".join(cmd))
    logs.mkdir(parents=True, exist_ok=True)
    fd, stem = tempfile.mkstemp(dir=logs, prefix=Path(cmd[0]).name + "-")
    os.close(fd)
    out_path, err_path = Path(stem + ".out"), Path(stem + ".err")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        _pid, status, rusage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped: keep Popen consistent
    stdout = out_path.read_text(errors="replace")
    if proc.returncode != 0:
        stderr = err_path.read_text(errors="replace")
        raise BenchError(
            f"command failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            f"--- stderr (tail) ---\n{stderr[-3000:]}\n--- stdout (tail) ---\n{stdout[-1000:]}"
        )
    return elapsed, rusage.ru_maxrss, stdout


class Tool:
    """Command lines for one backup tool; subclasses fill in the specifics."""

    name = ""
    force_flag = ""

    def __init__(self, exe: str, work: Path) -> None:
        self.exe = exe
        self.work = work / self.name
        self.repo = self.work / "repo"
        self.env = dict(os.environ)
        self.env["XDG_CACHE_HOME"] = str(self.work / "cache")

    def init_cmd(self) -> list[str]: raise NotImplementedError
    def backup_cmd(self, source: Path, force: bool) -> list[str]: raise NotImplementedError
    def restore_cmd(self, target: Path) -> list[str]: raise NotImplementedError
    def restored_root(self, target: Path, source: Path) -> Path: raise NotImplementedError

    def parse_backup_output(self, stdout: str) -> dict:
        return {}


class Restic(Tool):
    name = "restic"
    force_flag = "--force"

    def __init__(self, exe: str, work: Path) -> None:
        super().__init__(exe, work)
        self.env["RESTIC_PASSWORD"] = PASSWORD
        for var in ("RESTIC_REPOSITORY", "RESTIC_PASSWORD_FILE", "RESTIC_PASSWORD_COMMAND"):
            self.env.pop(var, None)

    def init_cmd(self):
        return [self.exe, "init", "-q", "--repo", str(self.repo), "--repository-version", "2"]

    def backup_cmd(self, source, force):
        cmd = [self.exe, "backup", "-q", "--repo", str(self.repo), "--compression", "auto"]
        return cmd + (["--force"] if force else []) + [str(source)]

    def restore_cmd(self, target):
        return [self.exe, "restore", "latest", "-q", "--repo", str(self.repo), "--target", str(target)]

    def restored_root(self, target, source):
        # restic recreates the absolute source path below the target.
        for candidate in (os.path.abspath(source), os.path.realpath(source)):
            root = target / candidate.lstrip("/")
            if root.is_dir():
                return root
        return target / os.path.abspath(source).lstrip("/")


class Ballast(Tool):
    name = "ballast"
    force_flag = "--force-reread"

    def __init__(self, exe: str, work: Path) -> None:
        super().__init__(exe, work)
        self.env["BALLAST_PASSWORD"] = PASSWORD

    def init_cmd(self):
        return [self.exe, "repo", "init", "--repo", str(self.repo)]

    def backup_cmd(self, source, force):
        cmd = [self.exe, "backup", "path", str(source), "--repo", str(self.repo), "--json"]
        return cmd + (["--force-reread"] if force else [])

    def restore_cmd(self, target):
        return [self.exe, "restore", "latest", "--repo", str(self.repo), "--target", str(target)]

    def restored_root(self, target, source):
        # ballast restores the contents of the backed-up directory directly into the target.
        return target

    def parse_backup_output(self, stdout):
        debug(f"ballast backup JSON: {stdout.strip()}")
        try:
            summary = json.loads(stdout)
        except json.JSONDecodeError:
            return {}
        if isinstance(summary, dict) and "requests" in summary:
            return {"requests": summary["requests"]}
        return {}


def check_executable(tool_name: str, exe: str) -> str:
    """Resolve a tool's executable or exit with a clear message."""
    found = shutil.which(exe)
    if found is None:
        hint = ("build it with `cargo build --release` or pass --ballast PATH"
                if tool_name == "ballast" else "install restic (e.g. `apt-get install restic`)")
        sys.exit(f"error: {tool_name} executable not found or not executable: {exe}\n       {hint}, "
                 f"or use --only to benchmark just the other tool")
    return found


# --------------------------------------------------------------------------
# Benchmark phases
# --------------------------------------------------------------------------

OPS = [
    ("backup_initial", "initial backup"),
    ("backup_unchanged", "re-backup, unchanged"),
    ("backup_force", "re-backup, full re-read (--force / --force-reread)"),
    ("restore", "restore latest"),
]


def phase_init(tool: Tool) -> None:
    tool.work.mkdir(parents=True)
    run_measured(tool.init_cmd(), tool.env, tool.work / "logs")


def phase_backup(tool: Tool, source: Path, source_bytes: int, op: str, force: bool) -> Measurement:
    os.sync()
    secs, rss, stdout = run_measured(tool.backup_cmd(source, force), tool.env, tool.work / "logs")
    m = Measurement(tool.name, op, secs, rss, source_bytes, tool.parse_backup_output(stdout))
    log(f"{tool.name}: {op:<17} {secs:8.2f}s {m.mib_per_s:8.1f} MiB/s  peak RSS {m.rss_mib:7.1f} MiB")
    return m


# Where restores go: None means the tool's work directory (same disk as the data);
# --restore-dir moves them (e.g. to /dev/shm) to take the filesystem's inode
# allocator, whose cost depends on the disk's history, out of the comparison.
RESTORE_DIR: Path | None = None


def phase_restore(tool: Tool, source: Path, source_bytes: int, seed: int, keep: bool) -> Measurement:
    target = (RESTORE_DIR or tool.work) / f"{tool.name}-restore"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    os.sync()
    secs, rss, _ = run_measured(tool.restore_cmd(target), tool.env, tool.work / "logs")
    m = Measurement(tool.name, "restore", secs, rss, source_bytes)
    log(f"{tool.name}: {'restore':<17} {secs:8.2f}s {m.mib_per_s:8.1f} MiB/s  peak RSS {m.rss_mib:7.1f} MiB")
    verify_restore(source, tool.restored_root(target, source), seed)
    # Removed at the end of the run, not here: ext4 passes over inodes freed in the last
    # minutes when it allocates, so deleting one tool's restored tree just before the
    # next tool restores would charge that scan to the next tool.
    RESTORED.append(target)
    return m


RESTORED: list[Path] = []


def bench_tool(tool: Tool, source: Path, source_bytes: int, seed: int, keep: bool) -> dict:
    """All phases for one tool. Returns measurements and repository sizes."""
    log(f"== {tool.name} ({tool.exe}) ==")
    warm_cache(source)
    phase_init(tool)
    results = {
        "backup_initial": phase_backup(tool, source, source_bytes, "backup_initial", force=False),
    }
    repo_initial = disk_usage(tool.repo)
    results["backup_unchanged"] = phase_backup(tool, source, source_bytes, "backup_unchanged", force=False)
    results["backup_force"] = phase_backup(tool, source, source_bytes, "backup_force", force=True)
    results["restore"] = phase_restore(tool, source, source_bytes, seed, keep)
    return {
        "measurements": results,
        "repo_bytes_after_initial": repo_initial,
        "repo_bytes_final": disk_usage(tool.repo),
    }


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------

def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _fmt(x: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if x is None else f"{x:{spec}}{suffix}"


def build_report(results: dict[str, dict], args, source_files: int, source_bytes: int) -> dict:
    report = {
        "params": {"size_gib": args.size_gib, "seed": args.seed, "data": str(args.data), "work": str(args.work),
                   "restore_dir": str(args.restore_dir) if args.restore_dir else None},
        "source": {"files": source_files, "bytes": source_bytes},
        "tools": {},
        "operations": [],
    }
    for name, res in results.items():
        report["tools"][name] = {
            "repo_bytes_after_initial": res["repo_bytes_after_initial"],
            "repo_bytes_final": res["repo_bytes_final"],
            "repo_ratio_to_source": res["repo_bytes_after_initial"] / source_bytes,
        }
    for op, label in OPS:
        row = {"op": op, "label": label}
        for name in ("restic", "ballast"):
            m = results.get(name, {}).get("measurements", {}).get(op)
            row[name] = None if m is None else {
                "seconds": m.seconds, "mib_per_s": m.mib_per_s, "max_rss_kib": m.max_rss_kib, **m.extra,
            }
        r, b = row["restic"], row["ballast"]
        row["speedup"] = _ratio(r and r["seconds"], b and b["seconds"])
        row["rss_ratio"] = _ratio(r and r["max_rss_kib"], b and b["max_rss_kib"])
        report["operations"].append(row)
    return report


def render_markdown(report: dict) -> str:
    src = report["source"]
    lines = [
        f"Source: {src['files']} files, {src['bytes'] / MIB:.1f} MiB "
        f"({src['bytes'] / GIB:.2f} GiB). Speedup = restic s / ballast s; "
        "RSS ratio = restic RSS / ballast RSS (both >1 favour ballast).",
        "",
        "| operation | restic (s, MiB/s) | ballast (s, MiB/s) | speedup | peak RSS restic | peak RSS ballast | RSS ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(m):
        return "n/a" if m is None else f"{m['seconds']:.2f} s, {m['mib_per_s']:.1f} MiB/s"

    def rss(m):
        return "n/a" if m is None else f"{m['max_rss_kib'] / 1024:.1f} MiB"

    for row in report["operations"]:
        lines.append(
            f"| {row['label']} | {cell(row['restic'])} | {cell(row['ballast'])} | "
            f"{_fmt(row['speedup'], '.2f', 'x')} | {rss(row['restic'])} | {rss(row['ballast'])} | "
            f"{_fmt(row['rss_ratio'], '.2f', 'x')} |"
        )
    lines += ["", "| repository | size after initial backup | % of source | size at end |", "|---|---:|---:|---:|"]
    for name, t in report["tools"].items():
        lines.append(
            f"| {name} | {t['repo_bytes_after_initial'] / MIB:.1f} MiB | "
            f"{100 * t['repo_ratio_to_source']:.1f}% | {t['repo_bytes_final'] / MIB:.1f} MiB |"
        )
    tools = report["tools"]
    if "restic" in tools and "ballast" in tools:
        ratio = tools["restic"]["repo_bytes_after_initial"] / tools["ballast"]["repo_bytes_after_initial"]
        lines += ["", f"Repository size ratio (restic / ballast, after initial backup): {ratio:.3f}"]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def prepare_work_dir(work: Path, data: Path) -> None:
    """Wipe and recreate the work directory, refusing anything that looks unsafe."""
    work_r, data_r = work.resolve(), data.resolve()
    if work_r in (Path("/"), Path.home().resolve()) or work_r == data_r \
            or data_r.is_relative_to(work_r) or work_r.is_relative_to(data_r):
        raise BenchError(f"refusing to use --work {work}: it overlaps / or the data directory")
    if work.exists():
        if any(work.iterdir()) and not (work / WORK_MARKER_NAME).exists():
            raise BenchError(f"--work {work} is not empty and was not created by this script; "
                             "refusing to wipe it")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / WORK_MARKER_NAME).touch()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark ballast against restic (backup, unchanged re-backup, forced full "
                    "re-read, restore) on the same generated mixed data set; prints a Markdown table "
                    "with time, throughput, peak RSS, ratios and repository sizes.",
        epilog="Example: python3 tests/benchmarks/repo_vs_restic.py --size-gib 1 --out bench.json",
    )
    p.add_argument("--size-gib", type=float, default=3.0,
                   help="approximate size of the generated data set in GiB (default: 3)")
    p.add_argument("--data", type=Path, default=Path(DEFAULT_DATA),
                   help=f"data set cache directory; regenerated only if its parameters change "
                        f"(default: {DEFAULT_DATA})")
    p.add_argument("--work", type=Path, default=Path(DEFAULT_WORK),
                   help=f"scratch directory for repositories and restores, wiped on every run; "
                        f"keep it on the same disk as --data (default: {DEFAULT_WORK})")
    p.add_argument("--ballast", default=DEFAULT_BALLAST,
                   help=f"path to the ballast binary (default: {DEFAULT_BALLAST})")
    p.add_argument("--restic", default=RESTIC, help="restic executable (default: restic on PATH)")
    p.add_argument("--only", choices=("restic", "ballast", "both"), default="both",
                   help="which tool(s) to benchmark (default: both)")
    p.add_argument("--out", type=Path, help="also write the results as JSON to this file")
    p.add_argument("--keep", action="store_true",
                   help="keep the work directory (repositories, restores, logs) after the run")
    p.add_argument("--seed", type=int, default=1, help="data generation seed (default: 1)")
    p.add_argument("--restore-dir", type=Path,
                   help="restore into DIR/<tool>-restore instead of the work directory (e.g. /dev/shm)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print commands and ballast's JSON backup summaries")
    args = p.parse_args(argv)
    if args.size_gib <= 0:
        p.error("--size-gib must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    global VERBOSE
    args = parse_args(argv)
    global RESTORE_DIR
    RESTORE_DIR = args.restore_dir
    VERBOSE = args.verbose
    data, work = args.data.absolute(), args.work.absolute()

    # Fail fast, before generating gigabytes, if a tool is missing.
    tools: list[Tool] = []
    if args.only in ("restic", "both"):
        tools.append(Restic(check_executable("restic", args.restic), work))
    if args.only in ("ballast", "both"):
        tools.append(Ballast(check_executable("ballast", args.ballast), work))

    try:
        source = ensure_data(data, args.size_gib, args.seed)
        files, source_bytes = scan_tree(source)
        prepare_work_dir(work, data)
        try:
            try:
                results = {t.name: bench_tool(t, source, source_bytes, args.seed, args.keep) for t in tools}
            finally:
                if not args.keep:
                    for target in RESTORED:
                        shutil.rmtree(target, ignore_errors=True)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    report = build_report(results, args, len(files), source_bytes)
    print(render_markdown(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
