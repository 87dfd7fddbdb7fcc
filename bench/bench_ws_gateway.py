"""Benchmark the WebSocket gateway against a bare `websockets` server that acks at once.

    .venv/bin/python bench/bench_ws_gateway.py [--devices 1000] [--rate 10] [--seconds 30]
        [--client-procs CPUS-1] [--ramp-from 1] [--ramp-factor 1.5] [--ramp-steps 12]
        [--ramp-seconds 10] [--idle-devices 1000] [--phases memory,broadcast,load,ramp]
        [--servers ours,echo] [--pin] [--sync-ms 5] [--profile FILE] [--keep DIR]

The servers: ours, the real gateway process (`co2unit-server gateways`: an ack once the
message is fsynced in its raw log, then stored in SQLite), and echo (bench/bare_ws_echo.py:
parses each message and acks it at once, stores nothing: the limit of `websockets` itself).
The devices are bench/lean_ws_devices.py's: the docs/websocket.md exchange of simulate-ws's
devices (simulator/ws_devices.py), without faults, one reading of three values a message, each
at its own phase of the period (not in step), but written by hand on asyncio protocols (an
RFC 6455 client, no extensions): the `websockets` client library costs too much CPU per message
to drive 10,000 msg/s on this machine. They run in --client-procs processes of plain asyncio
(no uvloop), each its share with one timer for all of them; by default one process a CPU the
server does not need (one here: each process costs wake-ups of its own, and one drives 10,000
msg/s with about 40% of a core). Their CPU is measured: the clients are reported saturated
when a process is busier than 90% of a core, or they all use over 90% of what they can have
(their pinned CPUs with --pin, else the CPUs the server leaves); then the figures are the
client's limit, not the server's. The server's CPU is given per
thread (the event loop's, the others'), and the whole machine's, in the measuring window.
--pin puts the servers (every thread) on CPU 0 and the clients on the other CPUs.

Phases, for each server:
  memory     RSS of the server with --idle-devices connected (hello, no readings) minus RSS
             before, per device (after a warm-up connection of 10 devices);
  broadcast  (ours) with those devices connected, `session-start` through the control socket:
             time from the call until each device has the command (first, p50, p99, last),
             then the same for `session-stop`;
  load       --devices devices at --rate messages/s each for --seconds: the rate of acks
             received within the window, ack latency p50/p99/max (target p99 < 100 ms), and for
             ours, once it stored everything, every acked seq once in the raw logs and every
             reading once in `measurements` (simulate-ws's verification);
  ramp       per-device rate from --ramp-from, times --ramp-factor per step, --ramp-seconds a
             step, until acks fall behind (under 95% of the offered messages acked in the
             window) or p99 exceeds 1 s: the largest rate sustained, and ours/echo.
With --profile FILE ours runs under cProfile (the event loop's thread) and the top functions
are printed at the end (profiling slows it: take its figures as relative only).
Loopback only; every phase is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import pstats
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench_server import server_cpu_s
from lean_ws_devices import LeanFleet

from co2unit_server.gateways import control
from co2unit_server.gateways.process import raise_open_file_limit
from co2unit_server.simulator.common import percentile
from co2unit_server.simulator.launcher import GatewayProcess, free_port
from co2unit_server.simulator.ws_devices import verify

BENCH_DIR = Path(__file__).resolve().parent
SERVERS = ("ours", "echo")
PHASES = ("memory", "broadcast", "load", "ramp")
P99_TARGET_S = 0.1
RAMP_P99_LIMIT_S = 1.0
SUSTAINED_SHARE = 0.95
SATURATED = 0.9  # of what the clients can have: this busy, they are the bottleneck
CONNECT_TIMEOUT_S = 60.0
CONNECT_STAGGER_S = 0.001  # between a client's device starts: no SYN storm on the backlog
START_DELAY_S = 1.0  # from the order to stream until the first tick: every process ready
ANSWER_TIMEOUT_S = 180.0
STORE_WAIT_S = 120.0
SETTLE_S = 2.0
SERVER_CPUS = {0}  # with --pin: the servers here, the clients on the other CPUs
PINNED = " (servers pinned to CPU 0, clients to the others)"


# --- the client processes -------------------------------------------------------------------

@dataclass
class ClientJob:
    port: int  # on 127.0.0.1
    device_ids: list[str]
    rate: float
    drain_s: float
    cpus: set[int] | None  # the CPUs the process may run on (None: any)


@dataclass
class StreamStats:
    """One client process's share of a streaming phase."""

    offered: int  # ticks in the window: messages it should have sent
    sent: int
    acked: int
    acked_in_window: int
    pending: int
    latencies: list[float]
    lateness: list[float]
    cpu_s: float  # process CPU within the window
    window_s: float


def client_main(job: ClientJob, conn: Connection) -> None:
    """A client process: its devices connect, then it follows the orders from `conn`."""
    raise_open_file_limit()
    if job.cpus is not None:
        os.sched_setaffinity(0, job.cpus)
    asyncio.run(Client(job, conn).serve())


class Client:
    def __init__(self, job: ClientJob, conn: Connection) -> None:
        self.job = job
        self.conn = conn

    async def serve(self) -> None:
        job = self.job
        fleet = LeanFleet("127.0.0.1", job.port, job.device_ids, job.rate, job.drain_s)
        devices = fleet.devices
        self.conn.send(("connected", await fleet.connect(CONNECT_STAGGER_S, CONNECT_TIMEOUT_S)))
        while True:
            order, *args = await asyncio.to_thread(self.conn.recv)
            if order == "stream":  # as a dict: this module is __mp_main__ here, not __main__
                self.conn.send(asdict(await self.stream(fleet, *args)))
            elif order == "verify":  # the lean devices have what verify() reads
                self.conn.send(verify(devices, *args).problems)  # type: ignore[arg-type]
            else:
                break
        await fleet.close()
        self.conn.send([(c.command, c.received) for d in devices for c in d.commands
                        if c.command in ("start", "stop")])

    async def stream(self, fleet: LeanFleet, start_wall: float, seconds: float) -> StreamStats:
        loop = asyncio.get_running_loop()
        fleet.begin(seconds, delay=max(0.0, start_wall - time.time()))
        cpu: list[float] = []
        for at in (fleet.start, fleet.end):
            loop.call_at(at, lambda: cpu.append(time.process_time()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fleet.all_drained.wait(),
                                   fleet.drain_until - loop.time() + 5)
        devices = fleet.devices
        acked = [m for d in devices for m in d.acked.values()]
        return StreamStats(
            offered=sum(d.ticks for d in devices),
            sent=sum(1 for d in devices for m in (*d.acked.values(), *d.pending.values())
                     if m.sends),
            acked=len(acked), acked_in_window=sum(m.acked_at <= fleet.end for m in acked),
            pending=sum(len(d.pending) for d in devices),
            latencies=[x for d in devices for x in d.latencies],
            lateness=[x for d in devices for x in d.lateness],
            cpu_s=cpu[1] - cpu[0] if len(cpu) == 2 else float("nan"), window_s=seconds)


class Clients:
    """--client-procs client processes, each with its share of the devices, driven by pipes."""

    def __init__(self, port: int, device_ids: list[str], rate: float, procs: int,
                 drain_s: float, cpus: set[int] | None) -> None:
        ctx = multiprocessing.get_context("spawn")  # a clean interpreter: no inherited loop
        self.conns: list[Connection] = []
        self.procs = []
        for k in range(procs):
            ours, theirs = ctx.Pipe()
            job = ClientJob(port, device_ids[k::procs], rate, drain_s, cpus)
            proc = ctx.Process(target=client_main, args=(job, theirs), daemon=True)
            proc.start()
            self.conns.append(ours)
            self.procs.append(proc)
        self.connected = sum(self._answers(lambda answer: answer[1]))

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()

    def _answers(self, pick: Callable[[Any], Any] = lambda answer: answer) -> list:
        answers = []
        for conn in self.conns:
            if not conn.poll(ANSWER_TIMEOUT_S):
                raise TimeoutError("a client process did not answer in time")
            answers.append(pick(conn.recv()))
        return answers

    def order(self, *order: object) -> None:
        for conn in self.conns:
            conn.send(order)

    def ask(self, *order: object) -> list:
        self.order(*order)
        return self._answers()

    def release(self) -> list[tuple[str, float]]:
        """Close every device; the session commands they received, with when."""
        commands = [c for part in self.ask("release") for c in part]
        for proc in self.procs:
            proc.join(30)
        return commands


# --- the servers ------------------------------------------------------------------------------

@dataclass
class Target:
    """A server under test: its port, process (for CPU and RSS), and what ours has more."""

    name: str
    port: int
    proc: subprocess.Popen
    gateway: GatewayProcess | None = None
    acked_total: int = 0  # acks received from it so far (ours: receipts to wait for)


class EchoServer:
    """bench/bare_ws_echo.py in a session of its own (so that its CPU can be counted)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, str(BENCH_DIR / "bare_ws_echo.py"),
                                      str(self.port)], stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(timeout=30)


@contextlib.contextmanager
def python_as(executable: Path) -> Iterator[None]:
    """Have GatewayProcess start `executable` for the interpreter: a wrapper that runs it under
    cProfile (the launcher has no hook for that, and its author owns it)."""
    saved, sys.executable = sys.executable, str(executable)
    try:
        yield
    finally:
        sys.executable = saved


def start_ours(base: Path, sync_ms: str, profile: Path | None) -> GatewayProcess:
    gateway = GatewayProcess(base, {"ws_gateway_port": str(free_port()),
                                    "raw_log_sync_ms": sync_ms})
    if profile is None:
        return gateway.start()
    wrapper = base / "python-cprofile"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m cProfile -o "{profile}" "$@"\n')
    wrapper.chmod(0o755)
    with python_as(wrapper):
        return gateway.start()


def pin(pid: int, cpus: set[int]) -> None:
    """Keep every thread of a process (and those it starts later) on `cpus`."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task.name), cpus)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def thread_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds so far of each thread of a process (the main thread's id is the pid)."""
    found = {}
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        with contextlib.suppress(OSError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            found[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf(
                "SC_CLK_TCK")
    return found


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs so far, from /proc/stat."""
    # user nice system idle iowait irq softirq steal (guest time is counted in user already)
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def receipts(db_path: Path) -> int:
    try:
        with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as conn:
            return conn.execute("SELECT count(*) FROM gateway_receipts").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def wait_stored(target: Target) -> float:
    """Seconds until ours has a receipt for every message it acked (bounded)."""
    started = time.monotonic()
    if target.gateway is None:
        return 0.0
    db_path = target.gateway.var_dir / "db.sqlite3"
    while receipts(db_path) < target.acked_total and \
            time.monotonic() - started < STORE_WAIT_S:
        time.sleep(0.2)
    return time.monotonic() - started


# --- the phases -------------------------------------------------------------------------------

@dataclass
class LoadFigures:
    """A streaming phase against one server."""

    devices: int
    rate: float
    stats: list[StreamStats]
    server_cpu_s: float
    machine_busy: float  # share of all CPUs busy in the window
    threads: str = ""  # the server's busiest threads, in cores
    client_cpus: int | None = None  # CPUs the clients are pinned to (None: all, shared)
    stored_after_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def offered(self) -> int:
        return sum(s.offered for s in self.stats)

    @property
    def window_s(self) -> float:
        return self.stats[0].window_s

    @property
    def rate_acked(self) -> float:
        return sum(s.acked_in_window for s in self.stats) / self.window_s

    @property
    def latencies(self) -> list[float]:
        return [x for s in self.stats for x in s.latencies]

    def p(self, share: float) -> float:
        return percentile(self.latencies, share)

    @property
    def client_busiest(self) -> float:
        return max(s.cpu_s / s.window_s for s in self.stats)

    @property
    def client_cores(self) -> float:
        return sum(s.cpu_s for s in self.stats) / self.window_s

    @property
    def client_saturated(self) -> bool:
        """A client process at a full core, or the clients at what the server leaves them."""
        capacity = self.client_cpus or (os.cpu_count() or 1) - self.server_cpu_s / self.window_s
        return max(self.client_busiest, self.client_cores / capacity) > SATURATED

    @property
    def sustained(self) -> bool:
        return (sum(s.acked_in_window for s in self.stats) >= SUSTAINED_SHARE * self.offered
                and self.p(0.99) <= RAMP_P99_LIMIT_S)

    def describe(self) -> str:
        lateness = [x for s in self.stats for x in s.lateness]
        saturated = "SATURATED" if self.client_saturated else "not saturated"
        return (f"{self.devices} devices x {self.rate:g} msg/s = {self.offered / self.window_s:.0f}"
                f" msg/s offered: {self.rate_acked:.0f} acked/s in the window; ack latency p50 "
                f"{self.p(0.5) * 1000:.1f} ms, p99 {self.p(0.99) * 1000:.1f} ms, max "
                f"{max(self.latencies, default=0) * 1000:.1f} ms; sent "
                f"{sum(s.sent for s in self.stats)}, acked {sum(s.acked for s in self.stats)}, "
                f"never acked {sum(s.pending for s in self.stats)}\n"
                f"      server CPU {self.server_cpu_s / self.window_s:.2f} cores ("
                f"{self.threads}); clients {self.client_cores:.2f} cores"
                f"{f' of {self.client_cpus} CPU(s)' if self.client_cpus else ''} over "
                f"{len(self.stats)} processes (busiest {self.client_busiest:.0%} of a core): "
                f"{saturated}; send lateness p99 "
                f"{percentile(lateness, 0.99) * 1000:.1f} ms; machine "
                f"{self.machine_busy:.0%} busy of {os.cpu_count()} CPUs")


def busiest_threads(pid: int, before: dict[int, float], window_s: float) -> str:
    """The server's threads that used CPU since `before`, in cores, busiest first."""
    used = {tid: cpu - before.get(tid, 0.0) for tid, cpu in thread_cpu_s(pid).items()}
    busy = sorted(((cpu, tid) for tid, cpu in used.items() if cpu > 0.01), reverse=True)
    return ", ".join(f"{'loop' if tid == pid else 'thread'} {cpu / window_s:.2f}"
                     for cpu, tid in busy[:4])


class Window:
    """The server's CPU (and its threads') and the machine's, from `start` for `seconds`."""

    def __init__(self, server: Target, start: float, seconds: float) -> None:
        pid = server.proc.pid
        time.sleep(max(0.0, start - time.time()))
        before, threads, busy = server_cpu_s(server), thread_cpu_s(pid), machine_busy()
        time.sleep(max(0.0, start + seconds - time.time()))
        busy_after = machine_busy()
        self.figures = (server_cpu_s(server) - before,
                        (busy_after[0] - busy[0]) / max(1, busy_after[1] - busy[1]),
                        busiest_threads(pid, threads, seconds))


@dataclass
class Bench:
    """The settings of a run and what it found."""

    args: argparse.Namespace
    lines: list[str] = field(default_factory=list)
    failed: bool = False

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.lines.append(text)

    def clients(self, target: Target, label: str, count: int, rate: float,
                drain_s: float) -> Clients:
        ids = [f"bench-{label}-{i:05d}" for i in range(count)]
        return Clients(target.port, ids, rate, min(self.args.client_procs, count), drain_s,
                       self.args.client_cpus)

    def memory(self, target: Target) -> None:
        with self.clients(target, f"warm-{target.name}", 10, 1.0, 5.0) as warm:
            warm.release()
        time.sleep(0.5)
        before = rss_kb(target.proc.pid)
        n = self.args.idle_devices
        with self.clients(target, f"idle-{target.name}", n, 1.0, 5.0) as idle:
            time.sleep(SETTLE_S)
            after = rss_kb(target.proc.pid)
            self.say(f"{target.name:<4} memory: {idle.connected} of {n} idle devices connected:"
                     f" RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB, "
                     f"{(after - before) / max(1, idle.connected):.1f} KiB per device")
            if target.gateway is not None and "broadcast" in self.args.phases:
                self.broadcast(target, idle)
            else:
                idle.release()

    def broadcast(self, target: Target, idle: Clients) -> None:
        assert target.gateway is not None
        socket_path = target.gateway.var_dir / "gateways.sock"
        calls = {}
        try:
            for command in ("session-start", "session-stop"):
                calls[command.removeprefix("session-")] = time.time()
                answer = control.call(socket_path, command, name="bench")
                if not answer.get("ok"):
                    raise control.GatewayUnavailable(answer.get("error"))
                time.sleep(1.0)
        except control.GatewayUnavailable as exc:
            self.say(f"ours broadcast: skipped, sessions not available ({exc})")
            idle.release()
            return
        got = idle.release()
        for command, called in calls.items():
            delays = [at - called for name, at in got if name == command]
            self.say(f"ours broadcast of {command} to {idle.connected} connected devices: "
                     f"{len(delays)} reached; from the control call: first "
                     f"{min(delays, default=0) * 1000:.1f} ms, p50 "
                     f"{percentile(delays, 0.5) * 1000:.1f} ms, p99 "
                     f"{percentile(delays, 0.99) * 1000:.1f} ms, last "
                     f"{max(delays, default=0) * 1000:.1f} ms")

    def stream(self, target: Target, label: str, rate: float, seconds: float,
               verify_stored: bool) -> LoadFigures:
        devices = self.args.devices
        with self.clients(target, label, devices, rate, self.args.drain) as group:
            start = time.time() + START_DELAY_S
            group.order("stream", start, seconds)
            window = Window(target, start, seconds)
            stats = [StreamStats(**part) for part in group._answers()]
            figures = LoadFigures(devices, rate, stats, *window.figures,
                                  len(self.args.client_cpus or ()) or None)
            target.acked_total += sum(s.acked for s in stats)
            figures.stored_after_s = wait_stored(target)
            if verify_stored and target.gateway is not None:
                gateway = target.gateway
                figures.problems = [p for part in group.ask(
                    "verify", gateway.remote_data, gateway.var_dir / "db.sqlite3")
                    for p in part]
            group.release()
        return figures

    def load(self, target: Target) -> LoadFigures:
        args = self.args
        figures = self.stream(target, f"load-{target.name}", args.rate, args.seconds, True)
        self.say(f"{target.name:<4} load: {figures.describe()}")
        p99_ok = figures.p(0.99) < P99_TARGET_S
        self.say(f"      p99 {'meets' if p99_ok else 'MISSES'} the {P99_TARGET_S * 1000:.0f} ms "
                 f"target; rate {'sustained' if figures.sustained else 'NOT sustained'}")
        if target.gateway is not None:
            lost = figures.problems
            self.say(f"      stored in the table {figures.stored_after_s:.1f} s after the run; "
                     + ("nothing lost: every acked seq once in the raw logs, every reading "
                        "once in measurements" if not lost else
                        f"LOST/WRONG: {len(lost)} problems, e.g. {lost[:3]}"))
            self.failed |= bool(lost)
        return figures

    def ramp(self, target: Target) -> float:
        """The largest message rate (all devices) sustained, 0 when none was."""
        args = self.args
        best = 0.0
        rate = args.ramp_from
        for step in range(args.ramp_steps):
            figures = self.stream(target, f"ramp{step}-{target.name}", rate, args.ramp_seconds,
                                  False)
            self.say(f"{target.name:<4} ramp {rate:g}/device: {figures.describe()}")
            if not figures.sustained:
                break
            best = figures.offered / figures.window_s
            rate = round(rate * args.ramp_factor, 2)
        return best


def top_functions(profile: Path, count: int = 25) -> str:
    """The profile's functions by own time and by cumulative time."""
    import io

    out = io.StringIO()
    stats = pstats.Stats(str(profile), stream=out)
    stats.sort_stats("tottime").print_stats(count)
    stats.sort_stats("cumulative").print_stats(count)
    return out.getvalue()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=10.0, help="messages/s per device")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--drain", type=float, default=30.0,
                        help="s the devices wait for their last acks after a phase")
    parser.add_argument("--client-procs", type=int,
                        default=max(1, (os.cpu_count() or 2) - len(SERVER_CPUS)),
                        help="client processes (default: the CPUs but one)")
    parser.add_argument("--idle-devices", type=int, default=1000)
    parser.add_argument("--ramp-from", type=float, default=1.0)
    parser.add_argument("--ramp-factor", type=float, default=1.5)
    parser.add_argument("--ramp-steps", type=int, default=12)
    parser.add_argument("--ramp-seconds", type=float, default=10.0)
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"comma-separated, of {', '.join(PHASES)}")
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help=f"comma-separated, of {', '.join(SERVERS)}")
    parser.add_argument("--pin", action="store_true",
                        help="servers on CPU 0 (every thread), client processes on the others")
    parser.add_argument("--sync-ms", default="5", help="raw_log_sync_ms of ours (default: 5)")
    parser.add_argument("--profile", type=Path, help="run ours under cProfile, stats to FILE")
    parser.add_argument("--keep", type=Path, help="run ours in DIR and keep it")
    args = parser.parse_args()
    args.phases = [p for p in args.phases.split(",") if p]
    args.servers = [s for s in args.servers.split(",") if s]
    args.client_cpus = (set(range(os.cpu_count() or 1)) - SERVER_CPUS) or None \
        if args.pin else None
    if not set(args.phases) <= set(PHASES) or not set(args.servers) <= set(SERVERS):
        parser.error("unknown phase or server")
    return args


def run(bench: Bench, base: Path) -> None:
    args = bench.args
    targets: list[Target] = []
    echo = None
    try:
        if "ours" in args.servers:
            gateway = start_ours(base, args.sync_ms, args.profile)
            targets.append(Target("ours", int(gateway.settings["ws_gateway_port"]),
                                  gateway.proc, gateway))
        if "echo" in args.servers:
            echo = EchoServer()
            targets.append(Target("echo", echo.port, echo.proc))
        if args.pin:
            for target in targets:
                pin(target.proc.pid, SERVER_CPUS)
        bench.say(f"{os.cpu_count()} CPUs{PINNED if args.pin else ''}; {args.client_procs} "
                  "client processes (lean RFC 6455 devices on asyncio, no uvloop, no "
                  "compression); one reading of 3 values a message; "
                  f"ours with raw_log_sync_ms {args.sync_ms}")
        best: dict[str, float] = {}
        for target in targets:
            if "memory" in args.phases or "broadcast" in args.phases:
                bench.memory(target)
            if "load" in args.phases:
                bench.load(target)
            if "ramp" in args.phases:
                best[target.name] = bench.ramp(target)
                bench.say(f"{target.name:<4} largest rate sustained: {best[target.name]:.0f} "
                          "msg/s")
        if best.get("ours") and best.get("echo"):
            bench.say(f"largest rate sustained ours/echo: {best['ours'] / best['echo']:.2f}x "
                      f"({best['ours']:.0f} / {best['echo']:.0f} msg/s)")
    finally:
        for target in targets:
            if target.gateway is not None:
                code = target.gateway.stop()
                bench.say(f"ours exited with {code}")
                bench.failed |= code != 0
        if echo is not None:
            echo.stop()


def main() -> int:
    args = parse_args()
    bench = Bench(args)
    with tempfile.TemporaryDirectory(prefix="co2unit-bench-ws-") as tmp:
        base = args.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        run(bench, base)
    if args.profile is not None and args.profile.exists():
        print(top_functions(args.profile))
    return 1 if bench.failed else 0


if __name__ == "__main__":
    sys.exit(main())
