"""Benchmark the unit server against a bare WSGI app under the same uWSGI settings.

    .venv/bin/python bench/bench_server.py [--ini server.ini.example] [--rounds 5]

Reports alive pings/s and p99 at 16 concurrent connections, and push throughput for 32 units
each pushing 256 KB in 4 KB chunks (verified byte-identical on our server), with our/bare ratios.
A third server, the stack's floor (bench/floor_app.py: Flask-RESTful that only stores each chunk
with an fdatasync), shows what the chosen stack and an fsync per chunk cost by themselves.
The servers run side by side and are measured in alternating rounds, so that the noise of a
shared machine hits all alike; the figures are the medians over the rounds.
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


def server_args(name: str, tuning: list[str], base: Path) -> tuple[list[str], dict[str, str]]:
    """uWSGI overrides and environment for one of the compared servers."""
    if name == "ours":
        return tuning, {}
    args = tuning + ["--uwsgi-option", f"module={name}_app:application",
                     "--uwsgi-option", f"pythonpath={BENCH_DIR}"]
    if name == "bare":
        return args, {}
    store = base / "floor_store"
    store.mkdir(parents=True)
    return args, {"FLOOR_STORE_DIR": str(store)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ini", default=str(REPO / "server.ini.example"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pings", type=int, default=10000, help="pings per round")
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--file-kb", type=int, default=256)
    parser.add_argument("--uwsgi-option", action="append", default=[], metavar="KEY=VALUE",
                        help="override an option of the ini for every server (repeatable)")
    args = parser.parse_args()
    tuning = [arg for option in args.uwsgi_option for arg in ("--uwsgi-option", option)]
    ini = Path(args.ini)
    names = ("ours", "floor", "bare")
    results: dict[tuple[str, str], list[LoadResult]] = {}
    identical = True

    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        servers = {}
        for name in names:
            extra, env = server_args(name, tuning, Path(tmp) / name)
            servers[name] = stack.enter_context(
                ServerProcess(Path(tmp) / name, ini, env=env, extra_args=extra))
        for round_no in range(args.rounds):
            # Rotate who goes first, so none always runs on a warmer (or busier) machine.
            order = names[round_no % 3:] + names[:round_no % 3]
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
        for name in reversed(names):
            print(describe(f"{name} {kind}", results[name, kind]))
    for kind, target in (("ping", "pings/s, target >= 0.25x"),
                         ("push", "push chunks/s, target >= 0.45x, every chunk fsynced")):
        vs_bare = ratio(results["ours", kind], results["bare", kind])
        vs_floor = ratio(results["ours", kind], results["floor", kind])
        floor_bare = ratio(results["floor", kind], results["bare", kind])
        print(f"{target}: ours/bare {vs_bare[0]:.2f}x ({vs_bare[1]:.2f}-{vs_bare[2]:.2f}); "
              f"floor/bare {floor_bare[0]:.2f}x; ours/floor {vs_floor[0]:.2f}x")
    ping_p99 = statistics.median(r.percentile_ms(99) for r in results["ours", "ping"])
    push_p99 = statistics.median(r.percentile_ms(99) for r in results["ours", "push"])
    print(f"p99 ours: ping {ping_p99:.1f} ms, push {push_p99:.1f} ms (target < 20 ms)")
    print(f"pushed files byte-identical: {identical}")
    failed = not identical or any(
        status != 200 for key, rounds in results.items() for r in rounds for status in r.statuses)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
