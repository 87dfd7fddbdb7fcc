"""Benchmark the unit server against a bare WSGI app under the same uWSGI settings.

    .venv/bin/python bench/bench_server.py [--ini server.ini.example] [--rounds 5]
        [--servers ours,floor,bare]     # or ours,plain: what metrics and the admin login cost
        [--old REV]                     # with `old` in --servers: the unit server of REV

Reports alive pings/s and p99 at 16 concurrent connections, and push throughput for 32 units
each pushing 256 KB in 4 KB chunks (verified byte-identical on our server), with our/bare ratios.
A third server, the stack's floor (bench/floor_app.py: Flask-RESTful that only stores each chunk
with an fdatasync), shows what the chosen stack and an fsync per chunk cost by themselves.
`ours` runs with its metrics and an admin login (admin_users_file) on; `plain` is the same app
without either (bench/plain_app.py), so ours/plain is what they cost the units' requests.
`old` is the unit server of an earlier git revision (--old REV: its src and server.ini.example
from `git archive`, first on the PYTHONPATH), so that a change is measured against what it
replaced in the same run.
The servers run side by side and are measured in alternating rounds, so that the noise of a
shared machine hits all alike; the figures are the medians over the rounds.
Loopback only; every loop is bounded by its request count.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

from loadgen import LoadResult, Request, run_lanes

from co2unit_server.records.users import add_user
from co2unit_server.simulator.launcher import ServerProcess

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CHUNK = 4096
PING_CONNECTIONS = 16
SERVERS = ("ours", "old", "plain", "floor", "bare")
# (numerator, denominator, what it shows), printed for the pairs that were run.
RATIOS = (("ours", "bare", "ours/bare"), ("floor", "bare", "floor/bare"),
          ("ours", "floor", "ours/floor"), ("old", "floor", "old/floor"),
          ("ours", "old", "ours/old"), ("ours", "plain", "metrics+login: ours/plain"))
TARGETS = {"ping": "pings/s, target >= 0.25x bare, >= 0.90x plain",
           "push": "push chunks/s, target >= 0.45x bare, >= 0.90x plain, every chunk fsynced"}


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


def server_cpu_s(server: ServerProcess) -> float:
    """CPU seconds used so far by every process of the server (its own session, on Linux)."""
    total_ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # After the ")" ending the command name: state, ppid, pgrp, session, ... utime, stime.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended meanwhile
        if int(fields[3]) == server.proc.pid:
            total_ticks += int(fields[11]) + int(fields[12])
    return total_ticks / os.sysconf("SC_CLK_TCK")


def low_high(ours: list[LoadResult], other: list[LoadResult]) -> str:
    """The median ratio with its per-round range, as printed."""
    median, low, high = ratio(ours, other)
    return f"{median:.2f}x ({low:.2f}-{high:.2f})"


def old_revision(rev: str, into: Path) -> Path:
    """The src/ and server.ini.example of git revision `rev`, unpacked into `into`."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src",
                              "server.ini.example"], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def server_args(name: str, tuning: list[str], base: Path) -> tuple[list[str], dict[str, str]]:
    """uWSGI overrides and environment for one of the compared servers."""
    if name in ("ours", "old"):
        users = base / "admin-users"
        add_user(users, "bench", "bench-password")
        env = {"CO2UNIT_ADMIN_USERS_FILE": str(users)}
        if name == "old":
            env["PYTHONPATH"] = str(base / "revision" / "src")
        return tuning, env
    args = tuning + ["--uwsgi-option", f"module={name}_app:application",
                     "--uwsgi-option", f"pythonpath={BENCH_DIR}"]
    if name in ("bare", "plain"):
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
    parser.add_argument("--servers", default="ours,floor,bare",
                        help=f"comma-separated, of {', '.join(SERVERS)} (default: %(default)s)")
    parser.add_argument("--old", metavar="REV", help="the git revision `old` runs")
    args = parser.parse_args()
    tuning = [arg for option in args.uwsgi_option for arg in ("--uwsgi-option", option)]
    ini = Path(args.ini)
    names = tuple(name for name in args.servers.split(",") if name)
    if not names or not set(names) <= set(SERVERS):
        parser.error(f"--servers takes names of {', '.join(SERVERS)}")
    if ("old" in names) != bool(args.old):
        parser.error("--old REV goes with `old` in --servers")
    results: dict[tuple[str, str], list[LoadResult]] = {}
    # Server CPU per request: steadier than req/s on a machine that others use too.
    cpu_us: dict[tuple[str, str], list[float]] = {}
    identical = True

    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        servers = {}
        for name in names:
            server_ini = ini
            if name == "old":  # its own settings: a newer ini may name settings it lacks
                revision = old_revision(args.old, Path(tmp) / name / "revision")
                server_ini = revision / "server.ini.example"
            extra, env = server_args(name, tuning, Path(tmp) / name)
            servers[name] = stack.enter_context(
                ServerProcess(Path(tmp) / name, server_ini, env=env, extra_args=extra))
        for round_no in range(args.rounds):
            # Rotate who goes first, so none always runs on a warmer (or busier) machine.
            order = names[round_no % len(names):] + names[:round_no % len(names)]
            for kind in ("ping", "push"):
                files = push_files(round_no, args.units, args.file_kb)
                for name in order:
                    server = servers[name]
                    lanes = (ping_lanes(args.pings, PING_CONNECTIONS) if kind == "ping"
                             else push_lanes(files))
                    cpu_before = server_cpu_s(server)
                    result = run_lanes(server.host, server.port, lanes)
                    results.setdefault((name, kind), []).append(result)
                    cpu_us.setdefault((name, kind), []).append(
                        (server_cpu_s(server) - cpu_before) / result.requests * 1e6)
                    if kind == "push" and name in ("ours", "old", "plain"):
                        identical = identical and verify(server, files)

    print(f"uWSGI settings from {ini} {' '.join(args.uwsgi_option)}; {args.rounds} rounds, "
          f"each {args.pings} pings at {PING_CONNECTIONS} connections and {args.units} units "
          f"x {args.file_kb} KB in {CHUNK}-byte chunks; medians over the rounds")
    for kind in ("ping", "push"):
        for name in reversed(names):
            print(describe(f"{name} {kind}", results[name, kind])
                  + f"  {statistics.median(cpu_us[name, kind]):5.0f} us CPU/req")
    for kind in ("ping", "push"):
        shown = [f"{label} {low_high(results[a, kind], results[b, kind])}"
                 for a, b, label in RATIOS if a in names and b in names]
        print(f"{TARGETS[kind]}: {'; '.join(shown)}")
    if "ours" in names:
        ping_p99 = statistics.median(r.percentile_ms(99) for r in results["ours", "ping"])
        push_p99 = statistics.median(r.percentile_ms(99) for r in results["ours", "push"])
        print(f"p99 ours: ping {ping_p99:.1f} ms, push {push_p99:.1f} ms (target < 20 ms)")
    print(f"pushed files byte-identical: {identical}")
    failed = not identical or any(
        status != 200 for key, rounds in results.items() for r in rounds for status in r.statuses)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
