"""Benchmark the unit server against a bare WSGI app under the same uWSGI settings.

    .venv/bin/python bench/bench_server.py [--ini server.ini.example] [--pings 20000]

Reports alive pings/s and p99 at 16 concurrent connections, and push throughput for 32 units
each pushing 256 KB in 4 KB chunks (verified byte-identical on our server), with our/bare ratios.
Loopback only; every loop is bounded by its request count.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from loadgen import LoadResult, Request, run_lanes

from co2unit_server.launcher import ServerProcess

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CHUNK = 4096


def unit_id(i: int) -> str:
    return f"co2unit-{i:012x}"


def ping_lanes(total: int, concurrency: int) -> list[Iterator[Request]]:
    def lane(k: int) -> Iterator[Request]:
        for i in range(k, total, concurrency):
            yield "POST", f"/ou/{unit_id(i % 500)}/alive?site_code=bench&rssi_dbm=-80", None
    return [lane(k) for k in range(concurrency)]


def push_lanes(files: dict[str, bytes]) -> list[Iterator[Request]]:
    def lane(hw_id: str, data: bytes) -> Iterator[Request]:
        for offset in range(0, len(data), CHUNK):
            path = f"/ou/{hw_id}/push-sequential/data/readings/readings-0000.tsv?offset={offset}"
            yield "PUT", path, data[offset:offset + CHUNK]
    return [lane(hw, data) for hw, data in files.items()]


def measure(server: ServerProcess, pings: int, units: int, file_kb: int) -> dict:
    ping_result = run_lanes(server.host, server.port, ping_lanes(pings, 16))
    files = {unit_id(i): os.urandom(file_kb * 1024) for i in range(units)}
    push_result = run_lanes(server.host, server.port, push_lanes(files))
    return {"ping": ping_result, "push": push_result, "files": files}


def verify(server: ServerProcess, files: dict[str, bytes]) -> bool:
    return all(
        (server.remote_data / hw / "data" / "readings" / "readings-0000.tsv").read_bytes() == data
        for hw, data in files.items())


def describe(label: str, result: LoadResult) -> str:
    mb_s = result.bytes_sent / result.wall_s / 1e6 if result.wall_s else 0.0
    return (f"{label:<10} {result.per_second:9.0f} req/s  p50 {result.percentile_ms(50):6.1f} ms"
            f"  p99 {result.percentile_ms(99):6.1f} ms  {mb_s:6.2f} MB/s  statuses "
            f"{dict(sorted(result.statuses.items()))}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ini", default=str(REPO / "server.ini.example"))
    parser.add_argument("--pings", type=int, default=20000)
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--file-kb", type=int, default=256)
    parser.add_argument("--uwsgi-option", action="append", default=[], metavar="KEY=VALUE",
                        help="override an option of the ini for both servers (repeatable)")
    args = parser.parse_args()
    tuning = [arg for option in args.uwsgi_option for arg in ("--uwsgi-option", option)]
    ini = Path(args.ini)

    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        bare_args = ["--uwsgi-option", "module=bare_app:application",
                     "--uwsgi-option", f"pythonpath={BENCH_DIR}"]
        for name, extra in (("ours", tuning), ("bare", tuning + bare_args)):
            server = ServerProcess(Path(tmp) / name, ini, extra_args=extra)
            server.start()
            try:
                results[name] = measure(server, args.pings, args.units, args.file_kb)
                if name == "ours":
                    results[name]["identical"] = verify(server, results[name]["files"])
            finally:
                server.stop()

    ours, bare = results["ours"], results["bare"]
    print(f"uWSGI settings from {ini} {' '.join(args.uwsgi_option)}; {args.pings} pings at "
          f"16 connections; {args.units} units x {args.file_kb} KB in {CHUNK}-byte chunks")
    for kind in ("ping", "push"):
        print(describe(f"bare {kind}", bare[kind]))
        print(describe(f"ours {kind}", ours[kind]))
    ping_ratio = ours["ping"].per_second / bare["ping"].per_second
    push_ratio = ours["push"].per_second / bare["push"].per_second
    print(f"ratio ours/bare: pings/s {ping_ratio:.2f}x (target >= 0.25x), "
          f"push chunks/s {push_ratio:.2f}x (target >= 0.45x, every chunk fsynced)")
    print(f"p99 ours: ping {ours['ping'].percentile_ms(99):.1f} ms, "
          f"push {ours['push'].percentile_ms(99):.1f} ms (target < 20 ms)")
    print(f"pushed files byte-identical: {ours['identical']}")
    failed = not ours["identical"] or any(
        status != 200 for r in (ours["ping"], ours["push"]) for status in r.statuses)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
