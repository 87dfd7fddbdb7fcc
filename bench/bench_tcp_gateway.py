"""Benchmark the TCP gateway against a bare asyncio server that only reads to EOF.

    .venv/bin/python bench/bench_tcp_gateway.py [--rounds 5] [--packets 5000]
        [--concurrency 64] [--devices 200] [--client-procs 1] [--servers ours,floor,bare]

Each packet is a weather station's 30-record packet (189 bytes) on a connection of its own:
connect, write, shut the write side, wait for the server's close. The gateway closes once the
packet is in its raw log (before the fsync and the database), the bare server once it read
EOF. A third server, the floor (bench/bare_tcp_server.py --durable), appends each packet to
its device's raw log and fsyncs it with the gateway's group commit, and does nothing else:
what durability alone costs. The client is single-threaded on selectors (or several such
processes), so it costs little CPU on a 2-core machine. The servers run side by side and are
measured in alternating rounds; the figures are medians over the rounds. After each of its
rounds our gateway must have stored the round's packets before the next round starts (no
database work left over to slow the other servers down), and in the end packets x 30 x 3
measurements (nothing lost).
Loopback only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import selectors
import socket
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench_server import server_cpu_s

from co2unit_server.records.tcp_format import HEADER
from co2unit_server.simulator.launcher import GatewayProcess, free_port

BENCH_DIR = Path(__file__).resolve().parent
RECORDS = 30
TARGET = 0.5  # ours/bare, packets/s
SERVERS = ("ours", "floor", "bare")
STORE_WAIT_S = 300.0


def packets(round_no: int, count: int, devices: int) -> list[bytes]:
    """Packets no two of which dedupe: a device's consecutive packets have other records."""
    out = []
    for i in range(count):
        device_id, seq = 1 + i % devices, (round_no * count + i) // devices
        body = b"".join(struct.pack("<HHH", seq % 65536, 20000 + j, 25000 + seq // 65536)
                        for j in range(RECORDS))
        out.append(HEADER.pack(len(body), 3600, 120, 6, device_id, 3) + body)
    return out


@dataclass
class ClientResult:
    wall_s: float
    done: int
    errors: int


def run_client(host: str, port: int, data: list[bytes], concurrency: int,
               timeout_s: float = 300.0) -> ClientResult:
    """Send every packet on a connection of its own, `concurrency` at once."""
    sel = selectors.DefaultSelector()
    pending = iter(data)
    done = errors = 0
    started = time.monotonic()

    def start_next() -> None:
        payload = next(pending, None)
        if payload is None:
            return
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex((host, port))
        sel.register(sock, selectors.EVENT_WRITE, payload)

    for _ in range(concurrency):
        start_next()
    while sel.get_map():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"the client did not finish in {timeout_s}s")
        for key, events in sel.select(timeout=1):
            sock = key.fileobj
            try:
                if events & selectors.EVENT_WRITE:
                    sock.send(key.data)  # 189 bytes: one send on loopback
                    sock.shutdown(socket.SHUT_WR)
                    sel.modify(sock, selectors.EVENT_READ)
                    continue
                ended = sock.recv(1) == b""
            except OSError:
                ended = False
            done += ended
            errors += not ended
            sel.unregister(sock)
            sock.close()
            start_next()
    return ClientResult(time.monotonic() - started, done, errors)


def run_clients(port: int, data: list[bytes], concurrency: int, procs: int) -> ClientResult:
    """run_client in `procs` processes, each with its share of packets and connections."""
    if procs == 1:
        return run_client("127.0.0.1", port, data, concurrency)
    started = time.monotonic()
    with ProcessPoolExecutor(procs) as pool:
        parts = list(pool.map(run_client, ["127.0.0.1"] * procs, [port] * procs,
                              [data[k::procs] for k in range(procs)],
                              [max(1, concurrency // procs)] * procs))
    return ClientResult(time.monotonic() - started, sum(p.done for p in parts),
                        sum(p.errors for p in parts))


class FloorServer:
    """bench/bare_tcp_server.py in a session of its own (so its CPU can be counted)."""

    def __init__(self, durable: Path | None = None, sync_ms: str = "5") -> None:
        self.port = free_port()
        extra = ["--durable", str(durable), "--sync-ms", sync_ms] if durable else []
        self.proc = subprocess.Popen([sys.executable, str(BENCH_DIR / "bare_tcp_server.py"),
                                      str(self.port), *extra], stdout=subprocess.PIPE,
                                     text=True, start_new_session=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(timeout=30)


def count(db_path: Path, table: str) -> int:
    try:
        with sqlite3.connect(db_path, timeout=30) as conn:
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def wait_stored(db_path: Path, packets: int) -> float:
    """Seconds until `packets` packets are in the tables (bounded). Counted by their receipts,
    each written in one transaction with its values: a count of the measurements, a scan of
    the whole table, would take a good part of a core from the gateway 10 times a second."""
    started = time.monotonic()
    while count(db_path, "gateway_receipts") < packets and \
            time.monotonic() - started < STORE_WAIT_S:
        time.sleep(0.1)
    return time.monotonic() - started


def figures(label: str, results: list[ClientResult], cpu_us: list[float]) -> str:
    rates = [r.done / r.wall_s for r in results]
    return (f"{label:<5} {statistics.median(rates):7.0f} packets/s ({min(rates):.0f}-"
            f"{max(rates):.0f})  {statistics.median(cpu_us):5.0f} us server CPU/packet  "
            f"errors {sum(r.errors for r in results)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--packets", type=int, default=5000, help="packets per round")
    parser.add_argument("--concurrency", type=int, default=64, help="connections at once")
    parser.add_argument("--devices", type=int, default=200, help="device IDs (1-250)")
    parser.add_argument("--client-procs", type=int, default=1, help="client processes")
    parser.add_argument("--sync-ms", default="5", help="raw_log_sync_ms of ours and the floor")
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help=f"comma-separated, of {', '.join(SERVERS)} (default: %(default)s)")
    args = parser.parse_args()
    names = tuple(name for name in args.servers.split(",") if name)
    if "ours" not in names or not set(names) <= set(SERVERS):
        parser.error(f"--servers takes ours and others of {', '.join(SERVERS)}")
    types = ",".join(f"{i}=tsl2561-si7021" for i in range(1, args.devices + 1))
    results: dict[str, list[ClientResult]] = {name: [] for name in names}
    cpu_us: dict[str, list[float]] = {name: [] for name in names}
    store_lag_s: list[float] = []
    sent_ours = 0

    with tempfile.TemporaryDirectory() as tmp:
        ours = GatewayProcess(Path(tmp), {"tcp_device_types": types,
                                          "raw_log_sync_ms": args.sync_ms}, tcp=True).start()
        servers: dict[str, tuple[object, int]] = {"ours": (ours, ours.tcp_port)}
        if "floor" in names:
            floor = FloorServer(Path(tmp) / "floor", args.sync_ms)
            servers["floor"] = (floor, floor.port)
        if "bare" in names:
            bare = FloorServer()
            servers["bare"] = (bare, bare.port)
        db_path = ours.var_dir / "db.sqlite3"
        try:
            for round_no in range(args.rounds):
                data = packets(round_no, args.packets, args.devices)
                # Rotate who goes first, so none always runs on a warmer (or busier) machine.
                order = names[round_no % len(names):] + names[:round_no % len(names)]
                for name in order:
                    server, port = servers[name]
                    cpu_before = server_cpu_s(server)
                    result = run_clients(port, data, args.concurrency, args.client_procs)
                    if name == "ours":
                        sent_ours += result.done
                        store_lag_s.append(wait_stored(db_path, sent_ours))
                    cpu_us[name].append((server_cpu_s(server) - cpu_before) / args.packets * 1e6)
                    results[name].append(result)
            stored = count(db_path, "measurements")
        finally:
            code = ours.stop()
            for name, (server, _) in servers.items():
                if name != "ours":
                    server.stop()

    print(f"{args.rounds} rounds of {args.packets} packets of {RECORDS} records, a connection "
          f"each, {args.concurrency} at once from {args.client_procs} client process(es), "
          f"{args.devices} devices, raw_log_sync_ms {args.sync_ms}; medians over the rounds "
          "(server CPU of ours includes storing in the database)")
    for name in reversed(names):
        print(figures(name, results[name], cpu_us[name]))
    for a, b in (("ours", "bare"), ("floor", "bare"), ("ours", "floor")):
        if a in names and b in names:
            ratios = [x.done / x.wall_s / (y.done / y.wall_s)
                      for x, y in zip(results[a], results[b], strict=True)]
            target = f", target >= {TARGET}x" if (a, b) == ("ours", "bare") else ""
            print(f"packets/s {a}/{b} {statistics.median(ratios):.2f}x ({min(ratios):.2f}-"
                  f"{max(ratios):.2f}){target}")
    print(f"ours: all stored in the table {statistics.median(store_lag_s):.2f} s after the "
          f"client's last packet (median; max {max(store_lag_s):.2f} s); end to end "
          f"{statistics.median(end_to_end(results['ours'], store_lag_s)):.0f} packets/s "
          "received and stored")
    expected = sent_ours * RECORDS * 3
    print(f"measurements stored {stored}, expected {expected} ({sent_ours} packets x "
          f"{RECORDS} x 3): {'nothing lost' if stored == expected else 'MISMATCH'}; "
          f"gateway exit code {code}")
    failed = stored != expected or code != 0 or any(
        r.errors for rounds in results.values() for r in rounds)
    return 1 if failed else 0


def end_to_end(results: list[ClientResult], lags: list[float]) -> list[float]:
    """Packets per second from a round's first connection until all of it was in the table."""
    return [r.done / (r.wall_s + lag) for r, lag in zip(results, lags, strict=True)]


if __name__ == "__main__":
    sys.exit(main())
