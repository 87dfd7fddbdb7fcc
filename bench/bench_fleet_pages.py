"""Fleet pages benchmark: /fleet and /api/units for 1,000 units and a year of pings.

Builds a database of 1,000 units x 365 days of pings (365,000 rows), deployments for 900 of
them, a year of push_daily rows per unit, pushed files and updates for a few, then starts the
server under uWSGI (the ini's 2 x 32) on loopback and times sequential requests over HTTP/1.0.

    .venv/bin/python bench/bench_fleet_pages.py [--units 1000] [--days 365] [--requests 20]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from co2unit_server.database import db
from co2unit_server.records.pinglog import INSERT_PING, Ping
from co2unit_server.simulator.launcher import ServerProcess
from co2unit_server.simulator.unitclient import request

REPO = Path(__file__).resolve().parent.parent
DAY = 86400.0
TARGET_MS = 250.0


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


def build(base: Path, units: int, days: int, now: float) -> None:
    """The database and push store of a fleet that has been out for `days` days."""
    rng = random.Random(1)
    ids = [f"co2unit-{i:012x}" for i in range(units)]
    conn = db.connect(base / "var" / "db.sqlite3")
    db.init_schema(conn)
    conn.execute("BEGIN")
    for day in range(days):
        # Most units wake daily; a few fell silent a while ago.
        conn.executemany(INSERT_PING, [
            Ping(_ts(now - day * DAY - rng.uniform(0, 3600)), hw_id, f"site-{i:04d}", 20,
                 rng.randint(-113, -60), 99).db_row()
            for i, hw_id in enumerate(ids) if day >= (i % 50 == 0) * 5])
        stamp = _ts(now - day * DAY)
        conn.executemany(db.UPSERT_PUSH_DAILY, [
            (hw_id, stamp.strftime("%Y-%m-%d"), 8192, 2, i % 3,
             stamp.strftime("%Y-%m-%dT%H:%M:%S"), stamp.strftime("%Y-%m-%d %H:%M:%S"))
            for i, hw_id in enumerate(ids)])
    start = _ts(now - days * DAY).strftime("%Y-%m-%d %H:%M:%S")
    conn.executemany("INSERT INTO deploy_durations_tiered VALUES (?, ?, ?, ?, 'deployed', ?, "
                     "NULL, NULL)", [(hw_id, f"site-{i:04d}", f"vj_{i % 40}", i % 4, start)
                                     for i, hw_id in enumerate(ids[: units * 9 // 10])])
    conn.execute("COMMIT")
    conn.close()
    for hw_id in ids[:20]:
        unit = base / "remote_data" / hw_id
        (unit / "data" / "readings").mkdir(parents=True)
        (unit / "data" / "readings" / "readings-0000.tsv").write_text("x\n" * 1000)
        (unit / "errors").mkdir()
        (unit / "errors" / "errors-0000.txt").write_text("----- 2026-11-01 INFO  x\n")
        update = unit / "updates" / "update-2026-11-01a" / "conf-patch"
        update.mkdir(parents=True)
        (update / "ou-id.json").write_text('{"site_code": "renamed"}')


def time_requests(server: ServerProcess, path: str, count: int) -> tuple[list[float], int]:
    """Milliseconds of `count` sequential GETs (after one warm-up) and the body size."""
    reply = request(server.host, server.port, "GET", path)
    assert reply.status == 200, reply.body[:300]
    times = []
    for _ in range(count):
        started = time.perf_counter()
        reply = request(server.host, server.port, "GET", path)
        times.append((time.perf_counter() - started) * 1000)
        assert reply.status == 200
    return times, len(reply.body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--ini", type=Path, default=REPO / "server.ini.example")
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory(prefix="co2unit-bench-") as tmp:
        started = time.monotonic()
        build(Path(tmp), args.units, args.days, time.time())
        print(f"built {args.units} units x {args.days} days of pings and push_daily rows in "
              f"{time.monotonic() - started:.1f} s", flush=True)
        with ServerProcess(Path(tmp), args.ini) as server:
            for path in ("/fleet", "/api/units"):
                times, size = time_requests(server, path, args.requests)
                median = statistics.median(times)
                p95 = statistics.quantiles(times, n=20, method="inclusive")[-1]
                ok &= p95 < TARGET_MS
                print(f"GET {path:<11} {args.requests} requests: median {median:.0f} ms, "
                      f"p95 {p95:.0f} ms, max {max(times):.0f} ms ({size / 1e3:.0f} kB)",
                      flush=True)
    print(f"target: p95 under {TARGET_MS:.0f} ms: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
