"""`co2unit-server gateways`: the asyncio process that runs the enabled gateways.

`co2unit-server serve` starts it under uWSGI (attach-daemon2) when a gateway is enabled, so
the one systemd unit runs everything and it stops with the server. SIGTERM or SIGINT stops it
cleanly: no new connection is taken, what was received is made durable and stored, then exit.

A configuration error never makes it exit, for uWSGI would start it again and again: `serve`
refuses to start on one (check_gateways), and here each gateway starts on its own, one that
cannot (its port taken, say) is logged and reported to `check` (records/gateway_health.py)
while the others run, and the pull collector follows its devices file (see pull_collector.py).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import logging
import resource
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from ..core.config import Config, ConfigError, load_config
from ..database.measurement_store import MeasurementStore, open_store
from ..records import tcp_format
from ..records.gateway_health import CRITICAL, WARNING, Health
from ..records.pull_format import read_devices_file
from .control import ControlServer
from .ws_tokens import check_tokens_file

log = logging.getLogger(__name__)
# Logged once every enabled gateway listens or polls, or failed to (tests and scripts wait
# for it).
READY = "gateways ready"
# The longest path of a Unix socket (sun_path holds 108 bytes with its final NUL).
MAX_SOCKET_PATH = 107
Closer = Callable[[], Awaitable[None]]


def raise_open_file_limit() -> None:
    # A raw log file and a socket per device: a fleet of a thousand passes the usual 1024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def tune_gc() -> None:
    """Fewer passes of the cyclic garbage collector, over fewer objects.

    Under load every message allocates a few dozen objects, nearly all freed by reference
    counting, yet with the default threshold (700) a pass ran every few messages: 12-14 % of
    the event loop's time at 5,000 msg/s. What is loaded by now is never garbage: frozen, it
    is out of every pass."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 50)


# glibc mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_HEAP_BLOCKS = 4 << 20  # above asyncio's 256 KiB read buffer


def keep_read_buffers_on_the_heap() -> None:
    """Serve asyncio's 256 KiB read buffers from the heap, not a fresh mmap each.

    A socket read allocates max_size (256 KiB), over glibc's mmap threshold (128 KiB), and
    shrinks it to what arrived: an mmap, mremap and munmap per read, each munmap a TLB
    shootdown on every CPU (perf: 4-5 % of the gateway's CPU at 10,000 msg/s). Where the C
    library is not glibc this does nothing."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mallopt(_M_MMAP_THRESHOLD, _HEAP_BLOCKS)
    mallopt(_M_TRIM_THRESHOLD, 2 * _HEAP_BLOCKS)  # nor the heap's top given back each time


# --- the check `serve` makes before uWSGI starts -----------------------------------------------

def check_gateways(config: Config, http_port: int | None = None) -> None:
    """ConfigError with the first thing that would keep an enabled gateway from starting.

    Each file is checked by the function its gateway reads it with (the registry of
    tcp_device_types, and the ports' range, by load_config already)."""
    if config.pull_devices_file:
        read_devices_file(config.pull_devices_file)
    if config.ws_gateway_port and config.ws_tokens_file:
        check_tokens_file(config.ws_tokens_file)
    if config.ws_gateway_port and len(bytes(config.control_socket)) > MAX_SOCKET_PATH:
        raise ConfigError(f"var_dir {config.var_dir}: the gateway's control socket "
                          f"{config.control_socket} would be longer than the "
                          f"{MAX_SOCKET_PATH} bytes a Unix socket path may have")
    ports = {"tcp_gateway_port": config.tcp_gateway_port,
             "ws_gateway_port": config.ws_gateway_port, "the HTTP port": http_port or 0}
    taken: dict[int, str] = {}
    for setting, port in ports.items():
        if port in taken:
            raise ConfigError(f"{setting} {port} is also {taken[port]}")
        if port:
            taken[port] = setting
    for setting in ("tcp_gateway_port", "ws_gateway_port"):
        if ports[setting]:
            check_can_listen(config.gateway_host, ports[setting], setting)


def check_can_listen(host: str, port: int, setting: str) -> None:
    """ConfigError unless a gateway could listen on host:port now (as it binds: reuse_address)."""
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in addresses:
            with socket.socket(family, kind, proto) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(address)
    except OSError as exc:
        where = f"{host or '*'}:{port}"
        raise ConfigError(f"{setting} {port}: cannot listen on {where}: "
                          f"{exc.strerror or exc}") from None


# --- the process -----------------------------------------------------------------------------

async def _started(start: Awaitable[None], close: Closer) -> None:
    """Await a gateway's start; if it fails, close what it opened (its raw logs) and raise."""
    try:
        await start
    except BaseException:
        await close()
        raise


async def _start_tcp(config: Config, store: MeasurementStore, health: Health) -> Closer:
    from .tcp_gateway import TcpGateway  # each gateway's libraries only when it runs

    tcp = TcpGateway(config, store, tcp_format.parse_device_types(config.tcp_device_types))
    await _started(tcp.start(), tcp.close)
    log.info("TCP gateway listening on %s:%d", config.gateway_host or "*",
             config.tcp_gateway_port)
    return tcp.close


async def _start_pull(config: Config, store: MeasurementStore, health: Health) -> Closer:
    from .pull_collector import PullCollector

    pull = PullCollector(config, store,
                         lambda problem: health.set("pull devices file", WARNING, problem))
    await _started(pull.start(), pull.close)
    task = asyncio.create_task(pull.run(), name="pull devices file")
    task.add_done_callback(lambda t: _ended(t, "pull collector", health))

    async def close() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pull.close()
    return close


async def _start_ws(config: Config, store: MeasurementStore, health: Health) -> Closer:
    from .session_keeper import SessionKeeper
    from .ws_gateway import WsGateway

    sessions = SessionKeeper(config)
    ws = WsGateway(config, store, sessions)
    sessions.listeners.append(ws.broadcast)  # a start or stop reaches every device
    await _started(ws.start(), ws.close)
    # The CLI (`session start`) and the web app reach the running gateway here.
    control = ControlServer(config.control_socket, {**sessions.handlers(), "status": ws.status})
    await _started(control.start(), ws.close)
    log.info("WebSocket gateway listening on %s:%d", config.gateway_host or "*",
             config.ws_gateway_port)

    async def close() -> None:
        await control.close()
        await ws.close()  # acknowledges what was stored, then closes with 1001
    return close


Starter = Callable[[Config, MeasurementStore, Health], Awaitable[Closer]]


def _enabled(config: Config) -> list[tuple[str, Starter]]:
    """(name, starter) of each enabled gateway, in the order they start."""
    gateways: list[tuple[str, int | Path | None, Starter]] = [
        ("TCP gateway", config.tcp_gateway_port, _start_tcp),
        ("pull collector", config.pull_devices_file, _start_pull),
        ("WebSocket gateway", config.ws_gateway_port, _start_ws)]
    return [(name, start) for name, setting, start in gateways if setting]


def _ended(task: asyncio.Task, name: str, health: Health) -> None:
    """A gateway's task that ends before the stop has failed: logged, reported."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped: %s", name, task.exception(), exc_info=task.exception())
        health.set(name, CRITICAL, f"{name} stopped: {task.exception()}")


async def _start(name: str, start: Starter, config: Config, store: MeasurementStore,
                 health: Health) -> Closer | None:
    """Start one gateway; its failure is logged and reported, never raised to the others."""
    try:
        return await start(config, store, health)
    except (OSError, ConfigError, ValueError) as exc:
        log.error("%s not started: %s", name, exc)
        health.set(name, CRITICAL, f"{name} not started: {exc}")
    except Exception as exc:  # a bug: its traceback, but the others still run
        log.exception("%s not started", name)
        health.set(name, CRITICAL, f"{name} not started: {type(exc).__name__}: {exc}")
    return None


async def run_gateways(config: Config, stop: asyncio.Event) -> None:
    """Run every enabled gateway until `stop` is set, then shut them down cleanly."""
    store = open_store(config)
    health = Health(config.gateway_health_file)
    closers = [await _start(name, start, config, store, health)
               for name, start in _enabled(config)]
    tune_gc()
    keep_read_buffers_on_the_heap()
    log.info(READY)
    await stop.wait()
    log.info("gateways stopping")
    for close in reversed(closers):
        if close is not None:
            await close()
    await asyncio.to_thread(store.close, 10.0)
    health.remove()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ini", help="ini file whose [co2unit] section to apply")


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    config = load_config(environ, Path(args.ini) if args.ini else None)
    logging.basicConfig(level=config.log_level, stream=sys.stderr,
                        format="%(asctime)s gateways %(levelname)s %(name)s: %(message)s")
    if not config.gateways_enabled:
        print("co2unit-server gateways: no gateway enabled (set tcp_gateway_port, "
              "pull_devices_file or ws_gateway_port)", file=sys.stderr)
        return 2
    raise_open_file_limit()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await run_gateways(config, stop)

    asyncio.run(main())
    return 0
