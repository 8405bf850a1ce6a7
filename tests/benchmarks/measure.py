"""Running a command and measuring it, for the benchmarks: wall time and peak RSS."""

from __future__ import annotations

import json
import os
import subprocess
import sys

# Peak RSS comes from wait4 in a small launcher process started before this script
# holds the generated objects: a child forked from a large process reports that
# process's peak as its own (Linux carries the old address space's high-water mark
# over exec into ru_maxrss).
LAUNCHER = r"""
import json, os, subprocess, sys, tempfile, time
for line in sys.stdin:
    req = json.loads(line)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(req["cmd"], env=req["env"], shell=req["shell"],
                             stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        _, status, ru = os.wait4(p.pid, 0)
        seconds = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        print(json.dumps({"seconds": seconds, "rss_kib": ru.ru_maxrss,
                          "cpu": ru.ru_utime + ru.ru_stime,
                          "rc": os.waitstatus_to_exitcode(status),
                          "stdout": out.read().decode(errors="replace"),
                          "stderr": err.read().decode(errors="replace")[-3000:]}), flush=True)
"""
_launcher: subprocess.Popen | None = None


def run_measured(cmd, env=None, shell=False) -> tuple[float, int, str]:
    """(wall seconds, peak RSS KiB, stdout) of a child; raises on failure."""
    seconds, rss, out, _ = run_measured_cpu(cmd, env, shell)
    return seconds, rss, out


def run_measured_cpu(cmd, env=None, shell=False) -> tuple[float, int, str, float]:
    """(wall seconds, peak RSS KiB, stdout, CPU seconds: user + system) of a child."""
    global _launcher
    if _launcher is None:
        _launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
    _launcher.stdin.write(json.dumps({"cmd": cmd, "env": env or dict(os.environ), "shell": shell}) + "\n")
    _launcher.stdin.flush()
    r = json.loads(_launcher.stdout.readline())
    if r["rc"] != 0:
        raise SystemExit(f"failed: {cmd}\n{r['stderr']}")
    return r["seconds"], r["rss_kib"], r["stdout"], r["cpu"]


