"""A load generator that speaks the units' HTTP/1.0: one connection per request, read to close.

Single-threaded on selectors, so the generator itself costs little CPU on a 2-core machine:
`lanes` run concurrently, each sending its requests one after the other, as a unit does.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from co2unit_server.simulator.unitclient import Reply, build_request, parse_reply

# (method, path, body); the callback sees every reply of its lane, e.g. to check an ack.
Request = tuple[str, str, bytes | None]


@dataclass
class LoadResult:
    wall_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    bytes_sent: int = 0

    @property
    def requests(self) -> int:
        return len(self.latencies_s)

    @property
    def per_second(self) -> float:
        return self.requests / self.wall_s if self.wall_s else 0.0

    def percentile_ms(self, pct: float) -> float:
        ordered = sorted(self.latencies_s)
        index = min(len(ordered) - 1, int(round(pct / 100 * len(ordered))) - 1)
        return ordered[max(index, 0)] * 1000 if ordered else 0.0


@dataclass
class _Exchange:
    lane: int
    started: float
    outgoing: bytes
    body_len: int
    incoming: bytearray = field(default_factory=bytearray)


def run_lanes(host: str, port: int, lanes: list[Iterator[Request]],
              on_reply: Callable[[int, Reply], None] | None = None,
              timeout_s: float = 300.0) -> LoadResult:
    """Run every lane's requests (lanes concurrently) and measure each exchange."""
    sel = selectors.DefaultSelector()
    result = LoadResult()
    started = time.monotonic()

    def start_next(lane: int) -> None:
        request = next(lanes[lane], None)
        if request is None:
            return
        method, path, body = request
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex((host, port))
        exchange = _Exchange(lane, time.monotonic(), build_request(method, path, host, body),
                             len(body or b""))
        sel.register(sock, selectors.EVENT_WRITE, exchange)

    for lane in range(len(lanes)):
        start_next(lane)
    while sel.get_map():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"load did not finish in {timeout_s}s")
        for key, events in sel.select(timeout=1):
            sock, exchange = key.fileobj, key.data
            if events & selectors.EVENT_WRITE:
                sent = sock.send(exchange.outgoing)
                exchange.outgoing = exchange.outgoing[sent:]
                if not exchange.outgoing:
                    sel.modify(sock, selectors.EVENT_READ, exchange)
                continue
            chunk = sock.recv(65536)
            if chunk:
                exchange.incoming += chunk
                continue
            sel.unregister(sock)
            sock.close()
            reply = parse_reply(bytes(exchange.incoming))
            result.latencies_s.append(time.monotonic() - exchange.started)
            result.statuses[reply.status] = result.statuses.get(reply.status, 0) + 1
            result.bytes_sent += exchange.body_len
            if on_reply:
                on_reply(exchange.lane, reply)
            start_next(exchange.lane)
    result.wall_s = time.monotonic() - started
    return result
