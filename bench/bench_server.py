"""Benchmark the unit server against a bare WSGI app under the same uWSGI settings.

    .venv/bin/python bench/bench_server.py [--ini server.ini.example] [--rounds 5]

Reports alive pings/s and p99 at 16 concurrent connections, and push throughput for 32 units
each pushing 256 KB in 4 KB chunks (verified byte-identical on our server), with our/bare ratios.
Both servers run side by side and are measured in alternating rounds, so that the noise of a
shared machine hits both alike; the figures are the medians over the rounds.
Loopback only; every loop is bounded by its request count.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

from loadgen import LoadResult, Request, run_lanes

from co2unit_server.launcher import ServerProcess

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CHUNK = 4096
PING_CONNECTIONS = 16


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


def push_files(round_no: int, units: int, file_kb: int) -> dict[str, bytes]:
    """Fresh units for every round, so each round pushes new files from offset 0."""
    return {unit_id(round_no * units + i): os.urandom(file_kb * 1024) for i in range(units)}


def verify(server: ServerProcess, files: dict[str, bytes]) -> bool:
    return all(
        (server.remote_data / hw / "data" / "readings" / "readings-0000.tsv").read_bytes() == data
        for hw, data in files.items())


def describe(label: str, results: list[LoadResult]) -> str:
    """Median figures over the rounds, with the range of req/s."""
    rates = [r.per_second for r in results]
    mb_s = statistics.median(r.bytes_sent / r.wall_s / 1e6 for r in results)
    p50 = statistics.median(r.percentile_ms(50) for r in results)
    p99 = statistics.median(r.percentile_ms(99) for r in results)
    return (f"{label:<10} {statistics.median(rates):7.0f} req/s ({min(rates):.0f}-{max(rates):.0f})"
            f"  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  {mb_s:6.2f} MB/s")


def ratio(ours: list[LoadResult], bare: list[LoadResult]) -> tuple[float, float, float]:
    """Median, lowest and highest of the per-round ours/bare ratios."""
    ratios = [o.per_second / b.per_second for o, b in zip(ours, bare, strict=True)]
    return statistics.median(ratios), min(ratios), max(ratios)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ini", default=str(REPO / "server.ini.example"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pings", type=int, default=10000, help="pings per round")
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--file-kb", type=int, default=256)
    parser.add_argument("--uwsgi-option", action="append", default=[], metavar="KEY=VALUE",
                        help="override an option of the ini for both servers (repeatable)")
    args = parser.parse_args()
    tuning = [arg for option in args.uwsgi_option for arg in ("--uwsgi-option", option)]
    bare_args = ["--uwsgi-option", "module=bare_app:application",
                 "--uwsgi-option", f"pythonpath={BENCH_DIR}"]
    ini = Path(args.ini)
    results: dict[tuple[str, str], list[LoadResult]] = {}
    identical = True

    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        servers = {}
        for name, extra in (("ours", tuning), ("bare", tuning + bare_args)):
            servers[name] = stack.enter_context(
                ServerProcess(Path(tmp) / name, ini, extra_args=extra))
        for round_no in range(args.rounds):
            # Alternate who goes first, so neither always runs on a warmer (or busier) machine.
            order = ("ours", "bare") if round_no % 2 == 0 else ("bare", "ours")
            for kind in ("ping", "push"):
                files = push_files(round_no, args.units, args.file_kb)
                for name in order:
                    server = servers[name]
                    lanes = (ping_lanes(args.pings, PING_CONNECTIONS) if kind == "ping"
                             else push_lanes(files))
                    result = run_lanes(server.host, server.port, lanes)
                    results.setdefault((name, kind), []).append(result)
                    if kind == "push" and name == "ours":
                        identical = identical and verify(server, files)

    print(f"uWSGI settings from {ini} {' '.join(args.uwsgi_option)}; {args.rounds} rounds, "
          f"each {args.pings} pings at {PING_CONNECTIONS} connections and {args.units} units "
          f"x {args.file_kb} KB in {CHUNK}-byte chunks; medians over the rounds")
    for kind in ("ping", "push"):
        print(describe(f"bare {kind}", results["bare", kind]))
        print(describe(f"ours {kind}", results["ours", kind]))
    ping = ratio(results["ours", "ping"], results["bare", "ping"])
    push = ratio(results["ours", "push"], results["bare", "push"])
    print(f"ratio ours/bare: pings/s {ping[0]:.2f}x ({ping[1]:.2f}-{ping[2]:.2f}, target >= 0.25x),"
          f" push chunks/s {push[0]:.2f}x ({push[1]:.2f}-{push[2]:.2f}, target >= 0.45x, "
          "every chunk fsynced)")
    ping_p99 = statistics.median(r.percentile_ms(99) for r in results["ours", "ping"])
    push_p99 = statistics.median(r.percentile_ms(99) for r in results["ours", "push"])
    print(f"p99 ours: ping {ping_p99:.1f} ms, push {push_p99:.1f} ms (target < 20 ms)")
    print(f"pushed files byte-identical: {identical}")
    failed = not identical or any(
        status != 200 for key, rounds in results.items() if key[0] == "ours"
        for r in rounds for status in r.statuses)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
