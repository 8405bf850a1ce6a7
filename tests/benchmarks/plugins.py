#!/usr/bin/env python3
"""Application dumps through ballast's plugins against the databases' own tools.

Run (from the repository root, after `cargo build --release -p ballast` and
`guest-plugins/build`):

    python3 tests/benchmarks/plugins.py --size-mib 1024 --out /tmp/plugins-bench.json

Method
- MySQL (the machine's MariaDB): a database of about --size-mib of InnoDB data (one
  table of event rows: ids, numbers, a date, 256-1,000 bytes of hex text). The peer is
  `mysqldump --single-transaction --quick --routines --triggers --events --hex-blob DB |
  gzip > file`; ballast is `ballast backup app --plugin mysql` into a fresh local
  repository (the same mysqldump arguments, zstd, dedup, encryption). The restore
  (`ballast restore app` into an empty database) must give the same `CHECKSUM TABLE`.
- PostgreSQL: the same kind of table, about --size-mib with its index. The peer is
  `pg_dump -Fc -f file` (zlib-compressed); ballast is `ballast backup app --plugin
  postgresql` (`pg_dump -Fc --compress=0`, compressed by the repository). The restore
  must give the same checksum (row count and the sum of hashtext(row)).
- Peak RSS of ballast comes from wait4 in a small launcher process (measure.py).
- Each pair runs back to back, peer first, on the same data; figures are wall time.

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

from measure import run_measured

ROOT = Path(__file__).resolve().parents[2]
BALLAST = ROOT / "target/release/ballast"
MYSQL = ["mysql", "-h", "127.0.0.1", "-u", "root", "--batch", "--skip-column-names"]
PSQL = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def mysql(sql: str, db: str = "") -> str:
    args = MYSQL + ([db] if db else [])
    return subprocess.run(args, input=sql, capture_output=True, text=True, check=True).stdout


def psql(sql: str, db: str = "postgres") -> str:
    return subprocess.run(PSQL + ["-d", db, "-c", sql], capture_output=True, text=True, check=True).stdout


def ballast_env(work: Path, policy: str) -> dict:
    work.mkdir(parents=True)
    (work / "policy.yaml").write_text(policy)
    env = dict(os.environ)
    env.update({
        "BALLAST_REPO": str(work / "repo"),
        "BALLAST_PASSWORD": "bench",
        "BALLAST_PLUGIN_POLICY": str(work / "policy.yaml"),
        "BALLAST_CACHE_DIR": str(work / "cache"),
        "BALLAST_CATALOG": str(ROOT / "guest-plugins/catalog.toml"),
    })
    subprocess.run([str(BALLAST), "repo", "init", "--json"], env=env, check=True, capture_output=True)
    return env


def mysql_bench(size_mib: int, work: Path) -> dict:
    src, dst = "ballast_bench_src", "ballast_bench_dst"
    for db in (src, dst):
        mysql(f"DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db};")
    log(f"mysql: filling {src} to about {size_mib} MiB")
    mysql("""CREATE TABLE events (id BIGINT PRIMARY KEY, account INT, kind VARCHAR(16),
             amount DECIMAL(12,2), created DATETIME, body TEXT) ENGINE=InnoDB;""", src)
    batch, n = 100_000, 0
    while True:
        mysql(f"""INSERT INTO events SELECT seq, seq % 9973, ELT(1 + seq % 4, 'order', 'refund', 'login', 'update'),
                  (seq % 100000) / 7, '2026-01-01' + INTERVAL seq SECOND,
                  REPEAT(SHA2(seq, 256), 1 + seq % 16)
                  FROM seq_{n + 1}_to_{n + batch};""", src)
        n += batch
        # InnoDB's statistics lag behind inserts; refresh them before reading the size.
        mysql("ANALYZE TABLE events", src)
        size = int(mysql(f"SELECT data_length FROM information_schema.tables WHERE table_schema='{src}' AND table_name='events'"))
        if size >= size_mib << 20:
            break
    log(f"mysql: {n} rows, {size >> 20} MiB of table data")
    peer_file = work / "mysql.sql.gz"
    args = "--single-transaction --quick --routines --triggers --events --hex-blob -h 127.0.0.1 -u root"
    peer_s, _, _ = run_measured(["bash", "-c", f"set -o pipefail; mysqldump {args} {src} | gzip > {peer_file}"])
    env = ballast_env(work / "mysql", f"""targets:
  - {{ name: src, kind: mysql, address: "127.0.0.1:3306", user: root, database: {src} }}
  - {{ name: dst, kind: mysql, address: "127.0.0.1:3306", user: root, database: {dst} }}
plugins:
  - {{ name: mysql, targets: [src, dst], programs: {{ mysqldump: /usr/bin/mysqldump, mysql: /usr/bin/mysql }} }}
""")
    ours_s, rss, out = run_measured([str(BALLAST), "backup", "app", "--plugin", "mysql", "--target", "src", "--json"], env=env)
    snap = json.loads(out)
    log(f"mysql: dump peer {peer_s:.1f}s, ballast {ours_s:.1f}s, RSS {rss // 1024} MiB")
    restore_s, restore_rss, _ = run_measured([str(BALLAST), "restore", "app", "latest", "--target", "dst"], env=env)
    a = mysql("CHECKSUM TABLE events", src).split()[-1]
    b = mysql("CHECKSUM TABLE events", dst).split()[-1]
    mysql(f"DROP DATABASE {dst}; CREATE DATABASE {dst};")
    peer_restore_s, _, _ = run_measured(
        ["bash", "-c", f"set -o pipefail; gunzip < {peer_file} | mysql -h 127.0.0.1 -u root {dst}"])
    c = mysql("CHECKSUM TABLE events", dst).split()[-1]
    for db in (src, dst):
        mysql(f"DROP DATABASE {db}")
    return {
        "rows": n, "table_bytes": size,
        "peer": "mysqldump | gzip > file", "peer_seconds": round(peer_s, 2), "peer_file_bytes": peer_file.stat().st_size,
        "ballast_seconds": round(ours_s, 2), "ballast_rss_mib": rss // 1024,
        "dump_bytes": snap["snapshot"]["summary"]["total_bytes"], "stored_bytes": snap["snapshot"]["summary"]["bytes_stored"],
        "throughput_ratio": round(peer_s / ours_s, 2),
        "restore_seconds": round(restore_s, 2), "restore_rss_mib": restore_rss // 1024,
        "peer_restore_seconds": round(peer_restore_s, 2),
        "checksum_source": a, "checksum_restored": b, "checksum_peer_restored": c, "identical": a == b == c,
    }


def pg_bench(size_mib: int, work: Path) -> dict:
    src, dst = "ballast_bench_src", "ballast_bench_dst"
    for db in (src, dst):
        psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        psql(f"CREATE DATABASE {db}")
    log(f"postgresql: filling {src} to about {size_mib} MiB")
    psql("""CREATE TABLE events (id bigint PRIMARY KEY, account int, kind text, amount numeric(12,2),
            created timestamp, body text)""", src)
    batch, n = 100_000, 0
    while True:
        psql(f"""INSERT INTO events SELECT g, g % 9973, (ARRAY['order', 'refund', 'login', 'update'])[1 + g % 4],
                 (g % 100000) / 7.0, timestamp '2026-01-01' + g * interval '1 second',
                 repeat(md5(g::text) || md5((g + 1)::text), 1 + g % 16)
                 FROM generate_series({n + 1}, {n + batch}) g""", src)
        n += batch
        size = int(psql("SELECT pg_total_relation_size('events')", src))
        if size >= size_mib << 20:
            break
    log(f"postgresql: {n} rows, {size >> 20} MiB with indexes")
    peer_file = work / "pg.dump"
    peer_s, _, _ = run_measured(["pg_dump", "-Fc", "-h", "127.0.0.1", "-U", "postgres", "-f", str(peer_file), src])
    env = ballast_env(work / "pg", f"""targets:
  - {{ name: src, kind: postgresql, address: "127.0.0.1:5432", user: postgres, database: {src} }}
  - {{ name: dst, kind: postgresql, address: "127.0.0.1:5432", user: postgres, database: {dst} }}
plugins:
  - {{ name: postgresql, targets: [src, dst], programs: {{ pg_dump: /usr/bin/pg_dump, pg_restore: /usr/bin/pg_restore }} }}
""")
    ours_s, rss, out = run_measured([str(BALLAST), "backup", "app", "--plugin", "postgresql", "--target", "src", "--json"], env=env)
    snap = json.loads(out)
    log(f"postgresql: dump peer {peer_s:.1f}s, ballast {ours_s:.1f}s, RSS {rss // 1024} MiB")
    restore_s, restore_rss, _ = run_measured([str(BALLAST), "restore", "app", "latest", "--target", "dst"], env=env)
    tables = ["events"]
    check = "SELECT count(*) || ':' || coalesce(sum(hashtext(t::text)::bigint), 0) FROM {} t"
    sums = {t: (psql(check.format(t), src).strip(), psql(check.format(t), dst).strip()) for t in tables}
    for db in (src, dst):
        psql(f"DROP DATABASE {db} WITH (FORCE)")
    return {
        "rows": n, "table_bytes": size,
        "peer": "pg_dump -Fc -f file", "peer_seconds": round(peer_s, 2), "peer_file_bytes": peer_file.stat().st_size,
        "ballast_seconds": round(ours_s, 2), "ballast_rss_mib": rss // 1024,
        "dump_bytes": snap["snapshot"]["summary"]["total_bytes"], "stored_bytes": snap["snapshot"]["summary"]["bytes_stored"],
        "throughput_ratio": round(peer_s / ours_s, 2),
        "restore_seconds": round(restore_s, 2), "restore_rss_mib": restore_rss // 1024,
        "checksums": sums, "identical": all(a == b for a, b in sums.values()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--only", choices=["mysql", "postgresql"])
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    if not BALLAST.exists():
        raise SystemExit(f"{BALLAST} missing: cargo build --release -p ballast")
    subprocess.run([str(ROOT / "guest-plugins/build")], check=True)
    result = {"size_mib": a.size_mib}
    with tempfile.TemporaryDirectory(prefix="ballast-plugins-bench-") as d:
        work = Path(d)
        if a.only in (None, "mysql"):
            result["mysql"] = mysql_bench(a.size_mib, work)
        if a.only in (None, "postgresql"):
            result["postgresql"] = pg_bench(a.size_mib, work)
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
