"""`co2unit-server gateways`: the asyncio process that runs the enabled gateways.

`co2unit-server serve` starts it under uWSGI (attach-daemon2) when a gateway is enabled, so
the one systemd unit runs everything and it stops with the server. SIGTERM or SIGINT stops it
cleanly: no new connection is taken, what was received is made durable and stored, then exit.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import logging
import resource
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from ..config import Config, load_config
from ..measurement_store import open_store
from . import tcp_format
from .control import ControlServer
from .pull_format import read_devices_file

log = logging.getLogger(__name__)
# Logged once every enabled gateway listens or polls (tests and scripts wait for it).
READY = "gateways ready"


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


async def run_gateways(config: Config, stop: asyncio.Event) -> None:
    """Run every enabled gateway until `stop` is set, then shut them down cleanly."""
    store = open_store(config)
    tcp = pull = None
    if config.tcp_gateway_port:
        from .tcp_gateway import TcpGateway  # each gateway's libraries only when it runs

        tcp = TcpGateway(config, store, tcp_format.parse_device_types(config.tcp_device_types))
        await tcp.start()
        log.info("TCP gateway listening on %s:%d", config.gateway_host or "*",
                 config.tcp_gateway_port)
    pull_task = None
    if config.pull_devices_file:
        from .pull_collector import PullCollector

        devices = read_devices_file(config.pull_devices_file, config.pull_refresh_seconds)
        pull = PullCollector(config, store, devices)
        pull_task = asyncio.create_task(pull.run())
        log.info("pull collector polling %d devices from %s", len(pull.devices),
                 config.pull_devices_file)
    ws = control = None
    if config.ws_gateway_port:
        from .sessions import SessionKeeper
        from .ws_gateway import WsGateway

        sessions = SessionKeeper(config)
        ws = WsGateway(config, store, sessions)
        sessions.listeners.append(ws.broadcast)  # a start or stop reaches every device
        await ws.start()
        # The CLI (`session start`) and the web app reach the running gateway here.
        control = ControlServer(config.control_socket,
                                {**sessions.handlers(), "status": ws.status})
        await control.start()
        log.info("WebSocket gateway listening on %s:%d", config.gateway_host or "*",
                 config.ws_gateway_port)
    tune_gc()
    keep_read_buffers_on_the_heap()
    log.info(READY)
    await stop.wait()
    log.info("gateways stopping")
    if control is not None:
        await control.close()
    if ws is not None:
        await ws.close()  # acknowledges what was stored, then closes with 1001
    if tcp is not None:
        await tcp.close()
    if pull_task is not None:
        pull_task.cancel()
        await asyncio.gather(pull_task, return_exceptions=True)
        await pull.close()
    await asyncio.to_thread(store.close, 10.0)


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
