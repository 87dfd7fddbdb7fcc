"""The binary TCP gateway of the ESP8266 weather stations (docs/gateways.md).

A device connects, writes one packet and closes; the server sends nothing back, and the device
deletes its records once its write returned the full length. So a packet read to its end must
not be lost: it is appended to the device's raw log in the very event-loop callback that saw
the end of it (a kill -9 after that cannot lose it), fsynced with whatever else arrived within
the group commit window, and only then stored in the database. The gateway ends a connection
with a FIN only once its packet is in the raw log; any other end (a kill included) is a reset.

While remote_data is below min_free_bytes (headroom.py) the gateway does not listen at all, so
a station's connect is refused and it keeps its records for its next wake-up. Not listening,
rather than not accepting: the kernel completes the handshake of connections waiting in the
backlog, the station's write returns the full length into them, and it deletes its records,
which a gateway that cannot keep them would then lose. Connections taken before still have
their packets kept (the floor is their room). It listens again once there is room.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from typing import NamedTuple

from ..core.config import Config
from ..core.headroom import RECHECK_S, Headroom
from ..database.measurement_store import MeasurementStore
from ..records import tcp_format
from ..records.rawlog import RawLine, open_family, ts_text
from ..records.tcp_format import Decoded, History, PacketError, RecordFormat

log = logging.getLogger(__name__)
# Devices wake on the hour together: the kernel keeps this many waiting to be accepted (it
# caps the figure at net.core.somaxconn).
BACKLOG = 4096
# How long close() lets connections in flight finish before it ends their reads.
CLOSE_GRACE_S = 2.0
# Packets parsed and stored between two looks at the connections (at least), and in how
# many turns a durable batch is stored (at most).
STORE_SLICE = 8
STORE_TURNS = 8


class _Kept(NamedTuple):
    """A packet in its raw log, waiting for the fsync to be stored."""

    device: str
    ts: str
    source: str
    packet: Decoded | PacketError


# SO_LINGER values (struct linger): on with 0 s resets the connection at close.
RESET_ON_CLOSE = struct.pack("ii", 1, 0)
GRACEFUL_CLOSE = struct.pack("ii", 0, 0)


def _linger(transport: asyncio.BaseTransport, linger: bytes) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)


def peer_text(peername: object) -> str:
    """'ip:port' ('[ip]:port' for IPv6) of a socket's peer."""
    if not isinstance(peername, tuple) or len(peername) < 2:
        return str(peername)
    host, port = peername[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Connection(asyncio.Protocol):
    """One device's connection: gathers its bytes until EOF, the time limit or the size limit."""

    def __init__(self, gateway: TcpGateway) -> None:
        self.gateway = gateway
        self.data = bytearray()
        self.peer = "?"
        self.ended = False
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = peer_text(transport.get_extra_info("peername"))
        # Closed before its packet is kept (a kill -9 included), the connection is reset, not
        # ended with a FIN: the gateway's FIN means "in the raw log".
        _linger(transport, RESET_ON_CLOSE)
        self.timer = asyncio.get_running_loop().call_later(
            self.gateway.config.tcp_read_timeout_seconds, self.end, "timeout")
        self.gateway.open_connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.ended:
            return
        room = self.gateway.config.tcp_max_packet_bytes - len(self.data)
        self.data += data[:room]
        if len(data) > room:
            self.end(tcp_format.END_TOO_LARGE)

    def eof_received(self) -> bool:
        self.end(tcp_format.END_EOF)
        return False  # the transport closes: nothing is ever written back

    def connection_lost(self, exc: Exception | None) -> None:
        # Without an EOF first: the device reset the connection (what came is still kept).
        self.end("reset" if exc else tcp_format.END_EOF)
        self.gateway.open_connections.discard(self)

    def end(self, how: str) -> None:
        """The read is over: hand the packet to the gateway now, in this same callback."""
        if self.ended:
            return
        self.ended = True
        if self.timer is not None:
            self.timer.cancel()
        if self.transport is not None and how != tcp_format.END_EOF:
            self.transport.abort()  # unread bytes may follow: no point in a graceful close
        kept = self.gateway.received(bytes(self.data), how, self.peer)
        if kept and self.transport is not None and not self.transport.is_closing():
            _linger(self.transport, GRACEFUL_CLOSE)


class TcpGateway:
    """Listens for the weather stations' packets; keeps, makes durable, then stores each."""

    def __init__(self, config: Config, store: MeasurementStore,
                 registry: dict[int, RecordFormat]) -> None:
        self.config = config
        self.store = store
        self.registry = registry
        self.rawlog, self.commit = open_family(config, tcp_format.FAMILY)
        self.open_connections: set[_Connection] = set()
        self._histories: dict[str, History | None] = {}
        self._waiting: list[_Kept] = []  # appended, not yet durable
        self._storer: asyncio.Task | None = None
        self._server: asyncio.Server | None = None
        self.headroom = Headroom(config.remote_data_dir, config.min_free_bytes, "tcp gateway")
        self._watcher: asyncio.Task | None = None

    async def start(self) -> None:
        if not self.headroom.full():
            await self._listen()
        self._watcher = asyncio.get_running_loop().create_task(self._watch_space())

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.config.gateway_host or None,
            self.config.tcp_gateway_port, backlog=BACKLOG, reuse_address=True)

    async def _watch_space(self) -> None:
        """Listen only while the disk has room (the module's doc says why)."""
        while True:
            await asyncio.sleep(RECHECK_S)
            full = self.headroom.full()
            if full and self._server is not None:
                self._server.close()  # the listening socket: connections in flight go on
                self._server = None
            elif not full and self._server is None:
                try:
                    await self._listen()
                except OSError as exc:  # the port taken meanwhile: try again next time
                    log.error("TCP gateway cannot listen again: %s", exc)

    async def close(self) -> None:
        """Stop accepting, let the connections in flight finish (bounded), store, close logs."""
        if self._watcher is not None:
            self._watcher.cancel()
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + CLOSE_GRACE_S
        while self.open_connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.open_connections):
            connection.end("timeout")  # what came is kept, as at a read timeout
        while self._storer is not None:
            await asyncio.shield(self._storer)
        if self._server is not None:
            await self._server.wait_closed()
        self.commit.close()
        self.rawlog.close()

    def history(self, device: str) -> History | None:
        """The device's previous valid packet; read from its raw log on its first packet."""
        if device not in self._histories:
            # Blocking, once per device and process: cheaper than a thread hop per packet.
            self._histories[device] = tcp_format.history_from_log(
                self.rawlog.device_dir(device), self.registry)
        return self._histories[device]

    def received(self, packet: bytes, end: str, peer: str) -> bool:
        """Keep one packet (appended to its raw log before this returns), then store it;
        False when it could not be kept."""
        received_us = time.time_ns() // 1000
        if not packet:
            log.debug("connection from %s ended (%s) without a byte", peer, end)
            return True
        try:
            self._waiting.append(self._keep(packet, end, peer, received_us))
        except Exception:  # one packet's problem never stops the gateway
            log.exception("packet of %d bytes from %s could not be kept", len(packet), peer)
            return False
        if self._storer is None:
            self._storer = asyncio.get_running_loop().create_task(self._store_when_durable())
        return True

    def _keep(self, packet: bytes, end: str, peer: str, received_us: int) -> _Kept:
        device = tcp_format.device_name(packet)
        ts = ts_text(received_us)
        try:
            decoded = tcp_format.decode_received(packet, end, received_us,
                                                 self.history(device), self.registry)
        except PacketError as exc:
            source = self.rawlog.append(device, RawLine(ts, peer, end, "bad", str(exc), packet))
            log.warning("bad packet from %s at %s: %s", device, peer, exc)
            return _Kept(device, ts, source, exc)
        line = RawLine(ts, peer, end, decoded.verdict, decoded.detail, packet)
        source = self.rawlog.append(device, line)
        self._histories[device] = decoded.history
        if decoded.verdict != "ok":
            log.warning("%s packet from %s at %s: %s", decoded.verdict, device, peer,
                        decoded.detail)
        return _Kept(device, ts, source, decoded)

    async def _store_when_durable(self) -> None:
        """Store what was appended once it is fsynced: one fsync round for all that waits."""
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    await self.commit.durable()  # covers every line appended before the call
                except OSError:
                    log.exception("raw log fsync failed: %d packets not stored (the next "
                                  "import stores them from the raw logs)", len(batch))
                    continue
                # A slice at a time, so the loop goes on reading: in a burst (the stations
                # wake on the hour) packets are kept first and parsed right after. A batch is
                # done in STORE_TURNS turns at most, so the backlog stays that short.
                size = max(STORE_SLICE, -(-len(batch) // STORE_TURNS))
                for start in range(0, len(batch), size):
                    for kept in batch[start:start + size]:
                        self._store(kept)
                    await asyncio.sleep(0)
        finally:
            self._storer = None

    def _store(self, kept: _Kept) -> None:
        try:
            if isinstance(kept.packet, PacketError):
                self.store.add(tcp_format.bad_receipt(kept.device, kept.ts, kept.source,
                                                      kept.packet), ())
            else:
                self.store.add(kept.packet.receipt(kept.device, kept.ts, kept.source),
                               kept.packet.rows(kept.device, kept.source))
        except Exception:  # the store logs its own problems: this is a bug, but one packet's
            log.exception("%s not stored", kept.source)
