"""The WebSocket gateway of the streaming devices (docs/websocket.md).

A device connects to `/`, says `hello`, gets `welcome` (with the running session, if any),
then streams `readings` messages, each with a `seq` that increases per device, without
waiting for acks. A new message is appended to the device's raw log (ws/<device>/NNNN.log, a
WsLine) in the very turn that took it from the connection, fsynced with whatever else arrived
within the group commit window, and only then acknowledged (`ack`, in seq order) and stored
in the database, with ws_format.stored (as the importer does from the line). A kill -9 after
an ack cannot lose the reading.

Built for a fleet on one event loop: a message is handled in the turn that read it
(DeviceSocket, not a task woken per message); what every connection took within the group
commit window is one cut, synced in the sync thread, after which one callback writes all their
acks and stores their lines (no task or future between: under load each costs a turn).

Seq rules per device, within its current sequence of seqs: a seq above the highest stored is
new; a seq already stored is acknowledged again and not stored again (a device resends what was
not acknowledged when it reconnects, oldest first, as it sent it); a seq below the highest, not
stored, is refused (OUT_OF_ORDER). Except when a seq seen so (stored, or below the highest)
cannot be a resend, because its values are all newer than every value stored in the
sequence, or it comes first on a connection and below the seq the device sent first on its
previous one: then the device started its seqs again (a restart, a reset) and a new sequence
begins with it, stored, its raw log line marked `new_sequence`. The state (the last
RECENT_SEQS seqs stored, the newest value's time and that first seq) is read from the device's raw
log at its first hello, or taken from what close() saved, while that still holds for the log
(ws_seqs).

One connection per device id: a second hello with the same id takes over, and the old
connection is closed with 4409. Stopping (close()) lets each connection acknowledge and store
what it took, then closes it with 1001.

A full disk (remote_data below min_free_bytes, headroom.py) is a state the devices are told
about, not a failure: a readings message that finds it full is not appended and not
acknowledged; the connection gets an error STORAGE_FULL, the messages taken before it are
acknowledged as usual, and it is closed with 1013 (RFC 6455 "Try Again Later"); a hello
meanwhile gets the same error and close. The retry rule a device must follow: after a 1013
(or a STORAGE_FULL error), wait at least the seconds the close reason and the error message
give ("retry after N s", N = ws_full_retry_seconds), plus a random 0-50 % of them, before it
connects again; keep every unacknowledged message and resend it then. A fleet then comes back
spread over the jitter, each device about once per N s while the disk stays full, instead of
reconnecting and resending at once (what a 1011 per failed append caused: thousands of
reconnections and millions of resent messages a minute).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import DATA_OPCODES, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Event, State

from ..core.config import Config, ConfigError
from ..core.headroom import Headroom, no_space
from ..database.measurement_store import MeasurementStore
from ..database.rows import Receipt
from ..records import ws_format, ws_seqs
from ..records.rawlog import open_family, ts_text
from ..records.ws_format import Hello, MessageError, WsLine
from ..records.ws_seqs import RECENT_SEQS, SavedSeqs, SeqState, read_state
from .tcp_gateway import peer_text
from .ws_tokens import TokensFile, check_tokens_file

log = logging.getLogger(__name__)

# Messages a connection may have taken but not yet acknowledged (the batch waiting for its
# fsync round, and the next): a device that pipelines faster than rounds go is not read on
# (TCP holds it back), so it cannot take the event loop and the rounds from the others.
MAX_IN_FLIGHT = 64
MAX_LATEST_NAMES = 64  # latest values kept per device for status()
RATE_WINDOW_S = 10
ERROR_WINDOW_S = 60.0
SEND_TIMEOUT_S = 5.0  # a device that takes no frame for this long is dropped
CLOSE_TIMEOUT_S = 3.0  # for the device's answer to our close frame
CLOSE_GRACE_S = 10.0  # close() waits this long for every connection to finish, at most
MAX_IDLE_DEVICES = 10_000  # disconnected devices kept in status() (and their seq state)

# Close codes: 1001 going away (the gateway stops), 1008 policy (no hello, flood), 1009 too
# big (websockets itself), 1011 the raw log failed, 1013 try again later (ws_format.
# CLOSE_TRY_AGAIN: storage full, see the retry rule above); ours, in the 4000 range:
CLOSE_BAD_TOKEN = 4401
CLOSE_REPLACED = 4409


class Sessions(Protocol):
    """What the gateway uses of gateways/session_keeper.py's SessionKeeper."""

    @property
    def current_id(self) -> str | None: ...

    @property
    def current(self) -> dict[str, Any] | None: ...


def utc_z(us: int) -> str:
    """Microseconds since 1970 as ISO 8601 UTC with its Z (what status() shows)."""
    return ts_text(us) + "Z"


class _Device:
    """One device id: its seq state, its connection and what status() shows of it."""

    def __init__(self, device_id: str, state: SeqState) -> None:
        self.id = device_id
        self.highest = max(state.seqs) if state.seqs else None
        self.recent: deque[int] = deque(state.seqs, maxlen=RECENT_SEQS)
        self.recent_set = set(self.recent)
        self.newest = state.newest  # the newest time of a value stored in this sequence
        self.floor = state.floor  # the first seq of the latest connection that sent one
        self.anew = False  # the next line stored begins a new sequence
        self.seqs_hold = True  # what the raw log would say: worth saving at shutdown
        self.connection: _Connection | None = None
        self.sensors: tuple[str, ...] = ()
        self.peer = ""
        self.connected_since: str | None = None
        self.last_message_us: int | None = None
        self.rate: deque[list[int]] = deque(maxlen=RATE_WINDOW_S)  # [second, messages]
        self.received = 0
        self.acked = 0
        self.errors = 0
        self.error_times: deque[float] = deque()
        self.latest: dict[str, tuple[str, float]] = {}

    def is_new(self, readings: ws_format.Readings, first: bool) -> bool:
        """Whether to store a message (`first` on its connection); False: a resend.
        MessageError OUT_OF_ORDER for a seq below the highest stored, never stored."""
        floor = self.floor
        if first:
            self.floor = readings.seq
        seq = readings.seq
        if self.highest is None or seq > self.highest:
            return True
        if self._restarted(readings, first, floor):
            self.recent.clear()
            self.recent_set.clear()
            self.highest = self.newest = None
            self.anew = True
            return True
        if seq in self.recent_set:
            return False
        raise MessageError("OUT_OF_ORDER", f"seq {seq} is below {self.highest}, the highest "
                           "stored, and was not stored")

    def _restarted(self, readings: ws_format.Readings, first: bool, floor: int | None) -> bool:
        """Whether a seq this sequence has seen (stored, or below its highest) begins a new
        one. A resend is a stored message again: its values are stored ones, never newer
        than all of them; and a device resends oldest first, so what it sends first on a
        connection is never below what it sent first on its previous one (everything below
        that was acknowledged by then)."""
        rows = readings.rows
        if rows and self.newest is not None and min(rows)[0] > self.newest:
            return True
        return first and floor is not None and readings.seq < floor

    def stored(self, readings: ws_format.Readings) -> None:
        if len(self.recent) == RECENT_SEQS:
            self.recent_set.discard(self.recent[0])
        seq = readings.seq
        self.recent.append(seq)
        self.recent_set.add(seq)
        self.highest = seq if self.highest is None else max(self.highest, seq)
        newest = readings.newest
        if newest is not None and (self.newest is None or newest > self.newest):
            self.newest = newest
        self.anew = False

    def seq_state(self) -> SeqState:
        return SeqState(tuple(self.recent), self.newest, self.floor)

    def forget(self, seqs: set[int]) -> None:
        """Take back seqs whose lines may not be durable: a resend of them is stored anew.
        (Their lines may be in the log after all: its scan, not these seqs, says next time.)"""
        self.seqs_hold = False
        self.recent = deque((s for s in self.recent if s not in seqs), maxlen=RECENT_SEQS)
        self.recent_set = set(self.recent)
        self.highest = max(self.recent) if self.recent else None
        if not self.recent:  # a sequence begun in what is forgotten: mark its next line again
            self.anew = True
        # newest stays: too new only makes a restart harder to tell, never a resend new.

    def message(self, now_us: int) -> None:
        self.last_message_us = now_us
        second = now_us // 1_000_000
        if self.rate and self.rate[-1][0] == second:
            self.rate[-1][1] += 1
        else:
            self.rate.append([second, 1])

    def error(self, now: float) -> int:
        """Count an error; return how many within the last minute."""
        self.errors += 1
        self.error_times.append(now)
        while self.error_times[0] < now - ERROR_WINDOW_S:
            self.error_times.popleft()
        return len(self.error_times)

    def values(self, rows: tuple[tuple[str, str, float], ...]) -> None:
        for ts, name, value in rows:
            known = self.latest.get(name)
            if known is None and len(self.latest) >= MAX_LATEST_NAMES:
                continue  # bounded: a device inventing names does not grow the gateway
            if known is None or ts >= known[0]:
                self.latest[name] = (ts, value)

    def status(self, now_us: int) -> dict[str, Any]:
        since = now_us // 1_000_000 - RATE_WINDOW_S
        return {
            "device": self.id,
            "connected": self.connection is not None,
            "peer": self.peer,
            "connected_since": self.connected_since,
            "last_message_at": utc_z(self.last_message_us) if self.last_message_us else None,
            "messages_per_s": sum(n for s, n in self.rate if s > since) / RATE_WINDOW_S,
            "readings_received": self.received,
            "readings_acked": self.acked,
            "errors": self.errors,
            "highest_seq": self.highest,
            "sensors": list(self.sensors),
            "latest": {name: {"ts": ts + "Z", "value": value}
                       for name, (ts, value) in sorted(self.latest.items())},
        }


@dataclass(frozen=True, slots=True)
class _Out:
    """A frame for the device, in order; all go out after the fsync round they were taken in."""

    text: str
    seq: int | None = None  # an ack's seq
    stored: tuple[Receipt, list[tuple]] | None = None  # a new message's rows, once durable


class DeviceSocket(ServerConnection):
    """websockets' server connection, handing each whole data message to the gateway in the
    very turn that read it (serve()'s documented create_connection hook).

    websockets' own way (a queue of frames that recv() takes from, a task woken per message)
    cost 18 % of the event loop's CPU at 6,000 msg/s. Until the gateway takes the messages
    (hand_over, after the hello), they wait in `inbox`, in order. Binary frames are handed
    over as bytes, a fragmented message once whole (websockets bounds its size), text that is
    not UTF-8 as its bytes (answered as a bad message)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inbox: deque[str | bytes] = deque()
        self.arrived = asyncio.Event()  # something is in the inbox, or the connection is lost
        self.handler: Callable[[str | bytes], None] | None = None
        self._fragments: list[Frame] = []
        self._inbox_full = False  # reading paused until hand_over

    def process_event(self, event: Event) -> None:
        if not isinstance(event, Frame) or event.opcode not in DATA_OPCODES:
            super().process_event(event)  # the handshake, pings, pongs, close
            return
        if event.fin and event.opcode is not Opcode.CONT:  # a message in one frame
            self._message(event.opcode, event.data)
            return
        if event.opcode is not Opcode.CONT:
            self._fragments = []
        self._fragments.append(event)
        if event.fin:
            frames, self._fragments = self._fragments, []
            self._message(frames[0].opcode, b"".join(frame.data for frame in frames))

    def _message(self, opcode: Opcode, data: bytes | bytearray | memoryview) -> None:
        message: str | bytes
        try:
            message = str(data, "utf-8") if opcode is Opcode.TEXT else bytes(data)
        except UnicodeDecodeError:
            message = bytes(data)
        if self.handler is not None:
            self.handler(message)
            return
        self.inbox.append(message)
        self.arrived.set()
        if len(self.inbox) >= MAX_IN_FLIGHT:
            self._inbox_full = True
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.arrived.set()

    async def first_message(self) -> str | bytes | None:
        """The first message (the hello); None when the connection ended without one."""
        await self.arrived.wait()
        return self.inbox.popleft() if self.inbox else None

    def hand_over(self, handler: Callable[[str | bytes], None]) -> None:
        """From now on each message goes to `handler` as it is read, those waiting first."""
        if self._inbox_full:  # first: the handler may pause it again
            self._inbox_full = False
            self.transport.resume_reading()
        while self.inbox:
            handler(self.inbox.popleft())
        self.handler = handler


def write_text(ws: ServerConnection, text: str) -> None:
    """`await ws.send(text)` for an open connection whose write buffer has room, without the
    coroutine and its async context manager (a third of an ack's cost at 10,000 msg/s):
    websockets' Sans-I/O protocol makes the frame, the connection writes what it made."""
    ws.protocol.send_text(text.encode())
    ws.send_data()


class _Connection:
    """One device connection: what it took waits for the gateway's next cut, whose delivery
    sends the frames (an ack after its line's fsync) and stores the lines."""

    def __init__(self, gateway: WsGateway, ws: DeviceSocket) -> None:
        self.gateway = gateway
        self.ws = ws
        self.peer = peer_text(ws.remote_address)
        self.device: _Device | None = None
        self.outbox: list[_Out] = []  # for the next commit round
        self.unsent = 0  # frames queued, not yet sent (or dropped): MAX_IN_FLIGHT bounds it
        self.backlog: list[_Out] = []  # frames the device is slow to take: sent by a task
        self.backlog_task: asyncio.Task | None = None
        self.progress = asyncio.Event()  # unsent went down
        self.held = False  # reading paused: MAX_IN_FLIGHT frames wait to go out
        self.reading = True  # False: take no new message; close once everything is sent
        self.broken = False  # the raw log failed: acknowledge nothing more
        self.first = True  # no readings message taken yet (the seq rules' floor)
        self.finishing: asyncio.Task | None = None

    @property
    def name(self) -> str:
        return self.device.id if self.device else "?"

    def queue(self, out: _Out) -> None:
        self.outbox.append(out)
        self.unsent += 1
        self.gateway.join_round(self)

    def take(self) -> list[_Out]:
        """The frames for the round being cut."""
        batch, self.outbox = self.outbox, []
        return batch

    async def until(self, done: Callable[[], bool]) -> None:
        """Wait until `done()` (checked again each time frames went out)."""
        while not done():
            self.progress.clear()
            await self.progress.wait()

    def _gone(self, count: int) -> None:
        self.unsent -= count
        self.progress.set()
        if self.held and self.unsent < MAX_IN_FLIGHT:
            self.held = False
            self.ws.transport.resume_reading()

    def hold(self) -> None:
        """Read no more from a device that has MAX_IN_FLIGHT frames waiting to go out (TCP
        holds it back): one that pipelines faster than rounds go cannot take the event loop
        and the rounds from the others."""
        self.held = True
        self.ws.transport.pause_reading()

    async def send(self, text: str) -> bool:
        """Send one frame now; False when the device is gone or does not take it in time."""
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await self.ws.send(text)
            return True
        except ConnectionClosed:
            return False
        except TimeoutError:
            log.warning("%s at %s takes no frames for %.0f s: dropped", self.name, self.peer,
                        SEND_TIMEOUT_S)
            self.ws.transport.abort()
            return False

    async def refuse(self, code: str, message: str, close_code: int, reason: str) -> None:
        """Answer a hello with an error and close (before the device is attached)."""
        log.warning("ws hello from %s refused: %s %s", self.peer, code, message)
        await self.send(ws_format.error(code, message))
        await self.ws.close(close_code, reason)

    def deliver(self, batch: list[_Out], durable: bool) -> list[tuple]:
        """After the batch's commit round: send its frames in order (acks only when
        `durable`); what to store (the receipts and values of its new lines)."""
        if not durable or self.broken:
            if self.device is not None:  # may not be durable: a resend is stored anew
                self.device.forget({out.seq for out in batch if out.stored is not None})
            if not self.broken:
                log.error("raw log fsync failed: %s at %s gets no acks and is closed (it "
                          "resends)", self.name, self.peer)
                self.break_off()
            self._gone(len(batch))
            return []
        stored = [out.stored for out in batch if out.stored is not None]
        try:
            self._send_batch(batch)
        except Exception:  # a bug: the lines are stored all the same, the device resends
            log.exception("ws %s at %s: sending failed; the connection is dropped", self.name,
                          self.peer)
            self.ws.transport.abort()
            self._gone(self.unsent - len(self.outbox) - len(self.backlog))
        return stored

    def _send_batch(self, batch: list[_Out]) -> None:
        # Written at once while the device keeps up (its transport's buffer empty), so one
        # callback answers the whole cut; a device that lags gets a task of its own, which may
        # wait for it without holding up the others.
        ws = self.ws
        for k, out in enumerate(batch):
            if self.backlog or ws.transport.get_write_buffer_size():
                self.backlog += batch[k:]
                if self.backlog_task is None:
                    self.backlog_task = asyncio.get_running_loop().create_task(
                        self._send_backlog())
                return
            if ws.state is not State.OPEN or ws.transport.is_closing():
                self._gone(len(batch) - k)  # gone: it resends what it has no ack for
                return
            write_text(ws, out.text)
            self._sent(out)

    def _sent(self, out: _Out) -> None:
        if out.seq is not None and self.device is not None:
            self.device.acked += 1
        self._gone(1)

    async def _send_backlog(self) -> None:
        try:
            while self.backlog:
                out = self.backlog.pop(0)
                if await self.send(out.text):
                    self._sent(out)
                else:
                    self._gone(1 + len(self.backlog))
                    self.backlog.clear()
        finally:
            self.backlog_task = None

    def break_off(self) -> None:
        """The raw log failed: acknowledge nothing more, close 1011 (1013 when the disk is
        full: the device waits before it resends)."""
        self.broken = True
        if self.gateway.headroom.is_full:
            self.finish(ws_format.CLOSE_TRY_AGAIN, self.gateway.retry_reason())
        else:
            self.finish(1011, "raw log failed")

    def finish(self, code: int, reason: str) -> Awaitable[None]:
        """Take no new message, send and store what was taken, then close (once)."""
        self.reading = False  # now, before any await: what arrives from here on is left
        if self.finishing is None:
            self.finishing = asyncio.get_running_loop().create_task(self._finish(code, reason))
        return asyncio.shield(self.finishing)

    async def _finish(self, code: int, reason: str) -> None:
        await self.until(lambda: self.unsent == 0)
        await self.ws.close(code, reason)


class WsGateway:
    """Serves the streaming devices: hello, readings, acks once durable; commands to all."""

    def __init__(self, config: Config, store: MeasurementStore, sessions: Sessions) -> None:
        self.config = config
        self.store = store
        self.sessions = sessions
        self.rawlog, self.commit = open_family(config, ws_format.FAMILY)
        self.headroom = Headroom(config.remote_data_dir, config.min_free_bytes, "ws gateway")
        self.tokens = TokensFile(config.ws_tokens_file) if config.ws_tokens_file else None
        self.devices: dict[str, _Device] = {}
        self._loading: dict[str, asyncio.Task[_Device]] = {}
        self._saved_path = config.var_dir / ws_seqs.SAVED_FILE
        self._saved: dict[str, SavedSeqs] = {}  # at the last clean shutdown, not yet taken
        self.connections: set[_Connection] = set()
        self._waiting: dict[_Connection, None] = {}  # with frames for the next cut, in order
        self._cut_due = False  # a cut is scheduled that takes what waits
        self.closing = False
        self._server: Server | None = None

    async def start(self) -> None:
        self._saved = ws_seqs.take_saved(self._saved_path)
        if self._saved:
            log.info("seqs of %d device(s) saved at the last clean shutdown", len(self._saved))
        origins = self.config.ws_allowed_origins
        keepalive = self.config.ws_keepalive_seconds
        if self.tokens is not None:
            self._check_tokens(self.tokens)
        self._server = await serve(
            self._serve, self.config.gateway_host or None, self.config.ws_gateway_port,
            # None: clients without an Origin (devices); a browser always sends one, so a page
            # elsewhere cannot open a device's connection (403) unless its origin is listed.
            origins=[None, *origins],
            process_request=self._process_request,
            max_size=self.config.ws_max_message_bytes,
            ping_interval=keepalive, ping_timeout=keepalive, close_timeout=CLOSE_TIMEOUT_S,
            reuse_address=True, create_connection=DeviceSocket)

    @staticmethod
    def _check_tokens(tokens: TokensFile) -> None:
        """Log what is wrong with the tokens file (serve refuses it with the same check)."""
        try:
            check_tokens_file(tokens.path)
        except ConfigError as exc:
            log.error("%s", exc)
        if tokens.read()[0] is None:
            log.error("ws_tokens_file %s is missing: add devices with `co2unit-server "
                      "add-device`", tokens.path)

    @staticmethod
    def _process_request(connection: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path != "/":
            return connection.respond(HTTPStatus.NOT_FOUND, "the WebSocket endpoint is /\n")
        return None

    async def close(self) -> None:
        """Stop accepting; let each connection acknowledge and store what it took, then close
        it with 1001 (bounded); make the raw logs durable."""
        self.closing = True
        if self._server is not None:  # None: its start failed, there is only the logs
            await self._stop_serving()
        self.commit.close()
        self.rawlog.close()
        self._save_seqs()

    async def _stop_serving(self) -> None:
        assert self._server is not None
        self._server.server.close()  # the listening socket only: connections stay open
        finishing = [c.finish(1001, "going away") for c in list(self.connections)]
        if finishing:
            await asyncio.wait(finishing, timeout=CLOSE_GRACE_S)
        for connection in self.connections:  # none, unless a bug: the raw logs close next
            if connection.unsent:
                log.error("ws %s at %s: %d frames still unsent at close", connection.name,
                          connection.peer, connection.unsent)
            if connection.backlog_task is not None:
                connection.backlog_task.cancel()
        self._server.close()  # what is left (a connection still in its handshake: 503)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), CLOSE_GRACE_S)

    def _save_seqs(self) -> None:
        """Save every device's seqs with the log they hold for (the raw logs are closed): the
        next start takes them instead of reading each log. Devices not seen this run keep
        what was saved for them."""
        saved = dict(self._saved)
        for device in self.devices.values():
            if device.seqs_hold:
                state = SavedSeqs.of(self.rawlog.device_dir(device.id), device.seq_state())
                if state is not None:
                    saved[device.id] = state
        try:
            ws_seqs.save(self._saved_path, saved)
        except OSError as exc:  # the next start reads the raw logs
            log.error("could not save the devices' seqs to %s: %s", self._saved_path, exc)
            return
        log.info("seqs of %d device(s) saved to %s", len(saved), self._saved_path)

    # --- one connection -----------------------------------------------------------------

    async def _serve(self, ws: DeviceSocket) -> None:  # type: ignore[override]
        connection = _Connection(self, ws)
        self.connections.add(connection)
        try:
            hello = await self._hello(connection)
            if hello is not None:
                await self._attach(connection, hello)
                await self._read(connection)
        except ConnectionClosed:
            pass
        except Exception:  # one connection's bug never stops the others
            log.exception("ws connection from %s (%s) failed", connection.peer,
                          connection.name)
        finally:
            await self._detach(connection)

    async def _hello(self, connection: _Connection) -> Hello | None:
        """The device's hello, or None when it was refused (and the connection closed)."""
        if self.closing:
            await connection.ws.close(1001, "going away")
            return None
        wait = self.config.ws_keepalive_seconds
        try:
            text = await asyncio.wait_for(connection.ws.first_message(), wait)
        except TimeoutError:
            await connection.refuse("HELLO_TIMEOUT", f"no hello within {wait:g} s", 1008,
                                    "no hello")
            return None
        if text is None:
            return None  # gone before its hello
        try:
            hello = ws_format.check_hello(ws_format.parse(text))
        except MessageError as exc:
            await connection.refuse(exc.code, str(exc), 1008, "hello first")
            return None
        if self.tokens is not None and not self.tokens.check(hello.device_id, hello.token):
            await connection.refuse("BAD_TOKEN", f"no valid token for {hello.device_id}",
                                    CLOSE_BAD_TOKEN, "bad token")
            return None
        if self.headroom.full():  # not logged per device: headroom logs the state once
            await connection.send(self._full_error())
            await connection.ws.close(ws_format.CLOSE_TRY_AGAIN, self.retry_reason())
            return None
        return hello

    async def _attach(self, connection: _Connection, hello: Hello) -> None:
        """Make the connection the device's (the old one is closed 4409), then welcome."""
        device = await self._device(hello.device_id)
        # Put back if _forget_idle took it meanwhile (or take the one loaded since: the raw
        # log, read after this device's last append, says the same).
        device = self.devices.setdefault(device.id, device)
        old, device.connection = device.connection, connection
        if old is not None:
            log.info("ws %s: new connection from %s replaces the one from %s", device.id,
                     connection.peer, old.peer)
            old.finish(CLOSE_REPLACED, "replaced")
        connection.device = device
        device.sensors = hello.sensors
        device.peer = connection.peer
        device.connected_since = utc_z(time.time_ns() // 1000)
        await connection.ws.send(ws_format.welcome(self.sessions.current))
        log.info("ws %s connected from %s (highest stored seq %s)", device.id,
                 connection.peer, device.highest)

    async def _device(self, device_id: str) -> _Device:
        """The device's state; its seqs are read from its raw log on its first hello."""
        device = self.devices.get(device_id)
        if device is not None:
            return device
        loading = self._loading.get(device_id)
        if loading is None:  # one read, however many hellos wait for it
            loading = self._loading[device_id] = asyncio.get_running_loop().create_task(
                self._load(device_id))
        return await asyncio.shield(loading)

    async def _load(self, device_id: str) -> _Device:
        try:
            state = await asyncio.to_thread(self._read_device, device_id)
            self._forget_idle()
            device = self.devices[device_id] = _Device(device_id, state)
            return device
        finally:
            del self._loading[device_id]

    def _read_device(self, device_id: str) -> SeqState:
        """(In a thread.) The device's seq state, saved at the last clean shutdown if it
        still holds, else read from its raw log; the log opened for its first append: a fleet
        reconnecting at once would hold up the loop for 0.1-0.2 s otherwise."""
        device_dir = self.rawlog.device_dir(device_id)
        saved = self._saved.pop(device_id, None)  # before opening: that may start a file
        state = saved.state() if saved is not None and saved.holds_for(device_dir) else None
        self.rawlog.open_device(device_id)
        return read_state(device_dir) if state is None else state

    def _forget_idle(self) -> None:
        """Keep the devices bounded: the longest idle disconnected ones go (their seq state
        is read again from their raw logs if they come back)."""
        idle = [d for d in self.devices.values() if d.connection is None]
        if len(idle) < MAX_IDLE_DEVICES:
            return
        idle.sort(key=lambda d: d.last_message_us or 0)
        for device in idle[:len(idle) - MAX_IDLE_DEVICES + 1]:
            del self.devices[device.id]

    async def _read(self, connection: _Connection) -> None:
        """Take the device's messages as they are read, until the connection ends."""
        ws = connection.ws
        ws.hand_over(lambda message: self._message(connection, message))
        await ws.wait_closed()
        sent = ws.protocol.close_sent
        if sent is not None and sent.code == 1009:
            log.warning("ws %s at %s: message over %d bytes: closed 1009", connection.name,
                        connection.peer, self.config.ws_max_message_bytes)

    def _message(self, connection: _Connection, message: str | bytes) -> None:
        if not connection.reading:
            return  # finishing: what arrives now is left (the device resends it)
        try:
            self._received(connection, message)
        except Exception:  # a bug; the other messages and connections go on
            log.exception("ws %s at %s: a message failed", connection.name, connection.peer)
        if connection.unsent >= MAX_IN_FLIGHT:
            connection.hold()

    async def _detach(self, connection: _Connection) -> None:
        await connection.finish(1000, "")
        self.connections.discard(connection)
        device = connection.device
        if device is not None and device.connection is connection:
            device.connection = None
            log.info("ws %s at %s disconnected (%s)", device.id, connection.peer,
                     connection.ws.close_code)

    # --- one message --------------------------------------------------------------------

    def _received(self, connection: _Connection, text: str | bytes) -> None:
        """Check one message and queue its answer; a new one is appended to the raw log
        here, in the turn that took it."""
        device = connection.device
        assert device is not None
        received_us = time.time_ns() // 1000
        device.message(received_us)
        try:
            readings = self._readings(ws_format.parse(text))
            first, connection.first = connection.first, False
            if not device.is_new(readings, first):  # a resend: acknowledged again, kept once
                device.received += 1
                connection.queue(_Out(ws_format.ack(readings.seq), readings.seq))
                return
        except MessageError as exc:
            self._refused(connection, exc)
            return
        assert isinstance(text, str)  # parse() refuses binary frames
        if self.headroom.full(len(text)):
            self._storage_full(connection)
            return
        device.received += 1
        line = WsLine(ts_text(received_us), connection.peer, self.sessions.current_id,
                      readings.seq, text, device.anew)
        try:
            source = self.rawlog.append(device.id, line)
        except OSError as exc:
            if no_space(exc):  # filled since the last look: nothing of it was kept
                self.headroom.filled()
                self._storage_full(connection)
                return
            log.exception("ws %s: raw log append failed; the device is closed and resends",
                          device.id)
            connection.break_off()
            return
        device.stored(readings)
        device.values(readings.rows)
        connection.queue(_Out(ws_format.ack(readings.seq), readings.seq,
                              ws_format.stored(readings, line, device.id, source)))

    def _storage_full(self, connection: _Connection) -> None:
        """Refuse the message (not acknowledged: the device keeps it), acknowledge what was
        taken before it, then close 1013; logged once per state by the headroom."""
        connection.queue(_Out(self._full_error()))
        connection.finish(ws_format.CLOSE_TRY_AGAIN, self.retry_reason())

    def retry_reason(self) -> str:
        """The 1013 close reason: how long the device must wait (the retry rule)."""
        return ws_format.retry_reason(self.config.ws_full_retry_seconds)

    def _full_error(self) -> str:
        return ws_format.error(
            ws_format.STORAGE_FULL, "the server's disk is full: nothing from here on is "
            f"stored or acknowledged; keep it and reconnect ({self.retry_reason()}, plus a "
            "random 0-50 %)")

    @staticmethod
    def _readings(message: dict[str, Any]) -> ws_format.Readings:
        kind = message["type"]
        if kind == "hello":
            raise MessageError("HELLO_AGAIN", "hello was already said on this connection")
        if kind != "readings":
            raise MessageError("UNKNOWN_TYPE", f"unknown message type {kind[:40]!r}")
        return ws_format.check_readings(message)

    def _refused(self, connection: _Connection, exc: MessageError) -> None:
        device = connection.device
        assert device is not None
        log.warning("ws %s at %s: %s %s", device.id, connection.peer, exc.code,
                    str(exc)[:200])
        connection.queue(_Out(ws_format.error(exc.code, str(exc))))
        if device.error(time.monotonic()) > self.config.ws_max_errors_per_minute:
            log.warning("ws %s at %s: over %d errors in a minute: closed 1008", device.id,
                        connection.peer, self.config.ws_max_errors_per_minute)
            connection.finish(1008, "too many errors")

    # --- commit rounds -------------------------------------------------------------------

    def join_round(self, connection: _Connection) -> None:
        """The connection has frames for the next cut (scheduled, if it is not, at the end
        of the group commit window)."""
        self._waiting[connection] = None
        if not self._cut_due:
            self._cut_due = True
            asyncio.get_running_loop().call_later(self.commit.window_s, self._cut)

    def _cut(self) -> None:
        """Take what every connection queued until now and have its lines synced; the
        delivery follows in the loop's first turn after the sync. No task or future between:
        under load every hop costs a whole turn of the loop (tens of milliseconds). Syncs run
        in order in one thread, so the cuts deliver in order."""
        self._cut_due = False
        waiting, self._waiting = self._waiting, {}
        batches = [(connection, connection.take()) for connection in waiting]
        self.commit.sync_then(lambda error: self._deliver(batches, error))

    def _deliver(self, batches: list[tuple[_Connection, list[_Out]]],
                 error: BaseException | None) -> None:
        """Send a synced cut's frames (acks only if the sync succeeded) and store its lines."""
        if error is not None:
            log.error("raw log fsync failed: %r", error)
            if no_space(error):
                self.headroom.filled()
        stored: list[tuple] = []
        for connection, batch in batches:
            try:
                stored += connection.deliver(batch, error is None)
            except Exception:  # a bug; the other connections' frames still go out
                log.exception("ws %s at %s: delivery failed", connection.name, connection.peer)
        self._store(stored)

    def _store(self, stored: list[tuple]) -> None:
        """Store durable lines' receipts and values (as the importer would from the lines)."""
        if not stored:
            return
        try:
            self.store.add_many(stored)
        except Exception:  # the store logs its own problems: this is a bug, but one round's
            log.exception("%d ws lines (%s...) not stored", len(stored), stored[0][0].source)

    # --- sessions and status ------------------------------------------------------------

    async def broadcast(self, command: str, session_id: str, at: str) -> int:
        """Send a session's start or stop to every connected device at once; how many
        devices took it."""
        text = ws_format.command(command, session_id, at)
        targets = [d.connection for d in self.devices.values()
                   if d.connection is not None and d.connection.reading]
        sent = await asyncio.gather(*(c.send(text) for c in targets), return_exceptions=True)
        for connection, result in zip(targets, sent, strict=True):
            if isinstance(result, BaseException):  # send() handles the expected ones
                log.error("%s to %s failed: %r", command, connection.name, result)
        log.info("%s of session %s sent to %d of %d devices", command, session_id,
                 sent.count(True), len(targets))
        return sent.count(True)

    async def status(self, request: dict[str, Any]) -> dict[str, Any]:
        """Every device seen since the gateway started (connected first), and the session."""
        now_us = time.time_ns() // 1000
        devices = sorted(self.devices.values(), key=lambda d: (d.connection is None, d.id))
        return {"devices": [d.status(now_us) for d in devices],
                "session": self.sessions.current}

