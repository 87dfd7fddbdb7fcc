"""A loopback TCP proxy that breaks connections the way CAT-M1 links do, reproducibly.

Per connection, with probability `rate`, one fault: the link drops (RST both ways) or stalls
(no byte moves until the client has given up) after a random fraction of the request or of the
reply has passed; a stalled request then arrives late, as the protocol warns chunks may. The
choice depends only on the seed and the request line (and how often that line was seen), so
the same fleet run meets the same faults whatever the thread interleaving. `kbps` caps each
direction of each connection at that many kB/s (1000 bytes), as a unit's own link would.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

FAULT_KINDS = ("drop_request", "drop_reply", "stall_request", "stall_reply")
HEAD_END = b"\r\n\r\n"
READ_SIZE = 4096


@dataclass(frozen=True)
class Fault:
    """A planned fault: which kind and where (a fraction of that message's length)."""

    kind: str
    fraction: float

    @property
    def direction(self) -> str:
        return self.kind.split("_")[1]

    @property
    def action(self) -> str:
        return self.kind.split("_")[0]


def plan_fault(seed: int, rate: float, key: bytes, kinds: tuple[str, ...] = FAULT_KINDS
               ) -> Fault | None:
    """The fault for the connection identified by `key`, or None; same inputs, same answer."""
    digest = hashlib.sha256(f"{seed}:".encode() + key).digest()
    rng = random.Random(digest)
    if rng.random() >= rate:
        return None
    return Fault(rng.choice(kinds), rng.random())


@dataclass
class ProxyStats:
    connections: int = 0
    faults: Counter = field(default_factory=Counter)  # kind -> faults that happened

    @property
    def faults_injected(self) -> int:
        return sum(self.faults.values())


class _Cut(Exception):
    """The planned fault happened: tear the connection down."""


def message_length(head: bytes) -> int:
    """Head plus Content-Length of an HTTP message (the proxy's idea of where it ends)."""
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            length = int(value.strip())
    return len(head) + length


class FaultProxy:
    """Listens on 127.0.0.1 and forwards to `target`; run it with start() / stop()."""

    def __init__(self, target: tuple[str, int], rate: float = 0.0, seed: int = 0,
                 kbps: float | None = None, stall_s: float = 30.0,
                 kinds: tuple[str, ...] = FAULT_KINDS) -> None:
        self.target = target
        self.rate = rate
        self.seed = seed
        self.bytes_per_s = kbps * 1000 if kbps else None
        self.stall_s = stall_s
        self.kinds = kinds
        self.stats = ProxyStats()
        self.host = "127.0.0.1"
        self.port = 0
        self.active = 0  # connections open now
        self._seen: Counter = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None

    def start(self) -> FaultProxy:
        """Bind the port here (a failure raises to the caller), then serve in a thread."""
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(asyncio.start_server(
            self._handle, self.host, 0, backlog=4096, limit=2**20))
        self.port = self._server.sockets[0].getsockname()[1]
        self._thread = threading.Thread(target=self._run, daemon=True, name="fault-proxy")
        self._thread.start()
        return self

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        loop.run_forever()
        # Stopped: close what is still open so no connection outlives the proxy.
        self._server.close()
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()

    def stop(self) -> None:
        if self._loop and self._thread:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
                      ) -> None:
        self.stats.connections += 1
        self.active += 1
        upstream_w = None
        graceful = False
        try:
            head = await _read_head(client_r)
            fault = self._plan(head)
            upstream_r, upstream_w = await asyncio.open_connection(*self.target, limit=2**20)
            up = asyncio.ensure_future(self._pipe(head, client_r, upstream_w, fault, "request"))
            down = asyncio.ensure_future(self._pipe(b"", upstream_r, client_w, fault, "reply"))
            done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            if down not in done and up.exception() is None:
                # The whole request went through but the unit left: the server still answers.
                await asyncio.wait({down})
            graceful = down.done() and not down.cancelled() and down.exception() is None
            for task in (up, down):
                task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
        except OSError:
            pass  # the server is down: the unit sees its connection reset
        except asyncio.CancelledError:
            pass  # the proxy is stopping: the finally below resets what is still open
        finally:
            _close(client_w, abort=not graceful)
            if upstream_w is not None:
                _close(upstream_w, abort=True)
            self.active -= 1

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no connection is open (late deliveries done); False on timeout."""
        deadline = time.monotonic() + timeout
        while self.active and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self.active

    def _plan(self, head: bytes) -> Fault | None:
        line = head.split(b"\r\n", 1)[0]
        self._seen[line] += 1
        return plan_fault(self.seed, self.rate, line + b"#%d" % self._seen[line], self.kinds)

    async def _pipe(self, first: bytes, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter, fault: Fault | None, direction: str) -> None:
        """Forward one direction until EOF, applying the rate limit and this direction's fault."""
        data = first if first or direction == "request" else await _read_head(reader)
        length = message_length(data)
        cut = None
        if fault and fault.direction == direction:
            cut = int(fault.fraction * length)
        sent, started = 0, time.monotonic()
        while data:
            if cut is not None and sent + len(data) > cut:
                before, data = data[: cut - sent], data[cut - sent:]
                await self._send(writer, before, sent, started)
                sent, cut = sent + len(before), None
                await self._inject(fault)
            await self._send(writer, data, sent, started)
            sent += len(data)
            data = await reader.read(READ_SIZE)
        if direction == "request" and sent < length:
            raise _Cut  # the unit gave up before its request was through
    async def _send(self, writer: asyncio.StreamWriter, data: bytes, sent: int,
                    started: float) -> None:
        if not data:
            return
        if self.bytes_per_s:
            # Pace by the total so far, so the link's rate holds whatever the read sizes.
            for start in range(0, len(data), 512):
                piece = data[start:start + 512]
                due = started + (sent + start + len(piece)) / self.bytes_per_s
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(piece)
                await writer.drain()
            return
        writer.write(data)
        await writer.drain()

    async def _inject(self, fault: Fault) -> None:
        """Drop now, or stall past the client's timeout; a stalled request is then delivered
        late (the server stores a chunk the unit gave up on), a stalled reply is lost."""
        self.stats.faults[fault.kind] += 1
        if fault.action == "drop":
            raise _Cut
        await asyncio.sleep(self.stall_s)
        if fault.direction == "reply":
            raise _Cut


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    """Read up to the end of an HTTP head (or whatever came before EOF)."""
    try:
        return await reader.readuntil(HEAD_END)
    except asyncio.IncompleteReadError as exc:
        return exc.partial


def _close(writer: asyncio.StreamWriter, abort: bool) -> None:
    if writer.is_closing():
        return
    if abort:
        # RST, as a dropped radio link looks to the far end: no clean FIN to mistake for EOF.
        with contextlib.suppress(OSError):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00"
                                b"\x00\x00\x00\x00")
        writer.transport.abort()
    else:
        writer.close()
