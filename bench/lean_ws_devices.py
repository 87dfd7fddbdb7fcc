"""Lean streaming devices for bench/bench_ws_gateway.py: RFC 6455 by hand on asyncio protocols.

The simulator's devices (simulator/ws_devices.py) use the full `websockets` client library: a
task per device, a sleep per tick, the library's frame machinery per message. That costs too
much CPU per message: on this 2-CPU machine their client processes took about 1.2 cores to
drive 10,000 msg/s, leaving the server under test too little, so the benchmark measured the
client. These devices speak the same docs/websocket.md exchange, as an honest WebSocket client
over real loopback TCP, for about a third of that (one process: ~0.4 core for 10,000 msg/s):

- one protocol per device (loop.create_connection); the HTTP/1.1 upgrade written by hand (no
  extensions, no Origin) and the 101 answer checked, Sec-WebSocket-Accept included;
- client frames masked (a random key per connection; the XOR done on whole ints), 7-, 16- and
  64-bit lengths; server frames parsed incrementally: text, ping (answered with a pong), close
  (recorded, answered, the socket closed); fragments, binary or masked frames are refused;
- `hello` -> `welcome`, then from LeanFleet.begin() one `readings` message a tick (one reading
  of the SENSORS, a random walk; ts from the wall clock as StreamingDevice._measure has it),
  each device at its own phase of the period (seeded by its id). One loop.call_at timer for
  the whole fleet walks the devices in phase order: no task or timer per device. Sent at the
  tick, not waiting for acks; an ack moves the message from `pending` to `acked` with its
  latency (loop.time() from the send to the ack's arrival).

Where the CPU went, and what is done instead: a timer handle per device (the loop's heap
compares them in Python), json.dumps and json.loads per message (the text is formatted from a
template checked once against json.dumps; an ack in the servers' own form is read directly,
anything else goes through json.loads), and recv(256 KiB) per read, which maps and unmaps
memory every time (the devices are BufferedProtocols reading into one shared buffer).

No faults, and no reconnects but one: a lost connection is recorded in `failures` and the
device's later messages stay pending (never acknowledged). The one reconnect is the retry rule
of a full disk (gateways/ws_gateway.py): after a close 1013 the device waits the seconds its
reason gives plus a random 0-50 %, connects again and, once welcomed, sends every
unacknowledged message again, oldest first. The devices keep what simulator/ws_devices.verify()
reads (device_id, acked and pending Messages, unexpected, connections, failures, closes,
commands, started), so the raw logs and the table are held against them unchanged. Every wait
is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import struct
import time

from co2unit_server.records import ws_format
from co2unit_server.records.rawlog import ts_text
from co2unit_server.simulator.ws_devices import (
    FALLBACK_RETRY_S,
    SENSORS,
    Command,
    Message,
    decode_reply,
    take_command,
)

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
OPEN_TIMEOUT_S = 10.0  # TCP connect, then upgrade and welcome, each
CLOSE_TIMEOUT_S = 5.0  # for the server's close frame and the end of the connection
MAX_HEAD_BYTES = 16384  # of the upgrade response
MAX_FRAME_BYTES = 1 << 20
MAX_CACHED_MASK = 4096  # payload lengths whose mask int a device keeps
READ_BUFFER_BYTES = 65536  # shared by a fleet's devices: each read is handled at once
# An ack as the servers write it (json.dumps, default separators), read without json.loads;
# anything else takes the general way.
ACK_PREFIX = b'{"type": "ack", "seq": '
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
CLOSE_NORMAL, CLOSE_AWAY, CLOSE_PROTOCOL, CLOSE_UNSUPPORTED, CLOSE_TOO_BIG = (
    1000, 1001, 1002, 1003, 1009)


class LeanFleet:
    """A client process's devices and their schedule: they connect at once (connect()),
    measure from begin() for `seconds`, wait for their last acks up to `drain_s`, and close
    on close()."""

    def __init__(self, host: str, port: int, device_ids: list[str], rate: float,
                 drain_s: float, seed: int = 1, sensors: tuple[str, ...] = SENSORS) -> None:
        self.host = host
        self.port = port
        self.rate = rate
        self.period = 1 / rate
        self.period_us = round(1e6 / rate)
        self.drain_s = drain_s
        self.seed = seed
        self.sensors = sensors
        # A readings message, as json.dumps(..., separators=(",", ":")) writes it (floats as
        # repr, as json does), without building a dict a message: checked once here.
        self.readings_format = ('{"type":"readings","seq":%d,"readings":[{"ts":"%sZ","values":{'
                                + ",".join(f"{json.dumps(name)}:%r" for name in sensors) + "}}]}")
        sample = [20.25 + 100.0 * i for i in range(len(sensors))]
        assert self.readings_format % (7, "T", *sample) == json.dumps(
            {"type": "readings", "seq": 7, "readings": [
                {"ts": "TZ", "values": dict(zip(sensors, sample, strict=True))}]},
            separators=(",", ":"))
        self.all_connected = asyncio.Event()  # every device welcomed or failed
        self.all_drained = asyncio.Event()
        self.start = self.end = self.drain_until = 0.0
        self.wall_start_us = 0
        self.ticking_over = False  # every tick of the window passed
        self.closing = False  # close() was called: no device reconnects
        self._settled = 0
        self._drained = 0
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        # recv_into one buffer: plain recv(256 KiB) would map and unmap memory for every read
        self.read_buffer = memoryview(bytearray(READ_BUFFER_BYTES))
        self.devices = [LeanDevice(device_id, self) for device_id in device_ids]
        # The order in which their ticks come round, period after period (each its own phase).
        self._order = sorted(self.devices, key=lambda d: d.phase)
        self._cycle = self._next = 0  # the period, and the device in _order, due next

    async def connect(self, stagger_s: float, timeout_s: float) -> int:
        """Connect every device (a start every `stagger_s`: no SYN storm on the backlog); how
        many were welcomed within `timeout_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        tasks = []  # a task a device while it connects, no longer
        for device in self.devices:
            tasks.append(loop.create_task(device.connect()))
            await asyncio.sleep(stagger_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_connected.wait(), max(0.1, deadline - loop.time()))
        for task in tasks:  # done by now unless the deadline passed
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return sum(d.connections > 0 and d.welcomed for d in self.devices)

    def begin(self, seconds: float, delay: float = 0.0) -> None:
        """Measure from `delay` s on, for `seconds`."""
        loop = self._loop
        self.start = loop.time() + delay
        self.end = self.start + seconds
        self.drain_until = self.end + self.drain_s
        self.wall_start_us = time.time_ns() // 1000 + round(delay * 1e6)
        loop.call_at(self.drain_until, self._drain_over)
        self._tick()

    def _tick(self) -> None:
        """Every device whose tick is due by now measures (and sends), in phase order; then
        one timer (loop.call_at) for the next due: no timer heap of a handle per device."""
        order, now = self._order, self._loop.time()
        due = self.end
        while order:
            due = self.start + (self._cycle + order[self._next].phase) * self.period
            if due > now or due >= self.end:
                break
            order[self._next].tick(due)
            self._next += 1
            if self._next == len(order):
                self._cycle, self._next = self._cycle + 1, 0
        if due < self.end:
            self._timer = self._loop.call_at(due, self._tick)
            return
        self._timer = None
        self.ticking_over = True
        for device in self.devices:
            device.check_drained()

    async def close(self) -> None:
        """Stop measuring; close every connection (close 1000), bounded."""
        self.closing = True
        if self._timer is not None:
            self._timer.cancel()
        lost = [d.lost for d in self.devices if d.lost is not None and not d.lost.done()]
        for device in self.devices:
            device.close(CLOSE_NORMAL)
        if lost:
            await asyncio.wait(lost, timeout=CLOSE_TIMEOUT_S + 1)

    def settled(self) -> None:
        self._settled += 1
        if self._settled == len(self.devices):
            self.all_connected.set()

    def drained(self) -> None:
        self._drained += 1
        if self._drained == len(self.devices):
            self.all_drained.set()

    def _drain_over(self) -> None:
        for device in self.devices:
            device.mark_drained()


class LeanDevice(asyncio.BufferedProtocol):
    """One streaming device on one connection: its messages until acknowledged, and what it met
    on the way (the attributes verify() reads are StreamingDevice's)."""

    def __init__(self, device_id: str, fleet: LeanFleet) -> None:
        self.device_id = device_id
        self.fleet = fleet
        self.rng = random.Random(f"{fleet.seed}:{device_id}")
        self.phase = self.rng.random()  # where in the period its ticks fall
        self.ticks = 0
        self.next_seq = 1
        self.pending: dict[int, Message] = {}  # unacknowledged, oldest first
        self.acked: dict[int, Message] = {}
        self.unexpected: list[str] = []  # what the device did not expect: problems
        self.commands: list[Command] = []
        self.closes: list[int | None] = []
        self.connections = 0
        self.failures: list[str] = []
        self.latencies: list[float] = []  # s from a message's send to its ack
        self.lateness: list[float] = []  # s from a message's tick to its send
        self.started = False  # a session is started, as far as the device knows
        self.is_drained = False
        self.lost: asyncio.Future[None] | None = None
        self.close_reason = ""  # of the last close frame received
        self.full_errors = 0  # STORAGE_FULL errors received
        self.full_waits: list[float] = []  # the waits taken after a 1013 (storage full)
        self.resent = 0
        self.retrying = False  # waiting to reconnect after a 1013
        self._reconnecting: asyncio.Task | None = None
        self._loop = asyncio.get_running_loop()
        self._settled = False
        self._values = [20.0 + 100.0 * i for i in range(len(fleet.sensors))]
        self._new_connection()

    def _new_connection(self) -> None:
        """The state of one connection (the first, or the next after a 1013)."""
        self.welcomed = False
        self._transport: asyncio.Transport | None = None
        self._open = False  # welcomed and not closing: readings may be sent
        self._upgraded = False
        self._close_sent = False
        self._close_got = False
        self._buffer = b""
        self._timeout: asyncio.TimerHandle | None = None
        self._key = os.urandom(4)  # the masking key of this connection
        self._masks: dict[int, int] = {}  # payload length: the key repeated to it, as an int
        self._ws_key = base64.b64encode(os.urandom(16)).decode()
        self._accept = base64.b64encode(
            hashlib.sha1(self._ws_key.encode() + WS_GUID).digest()).decode()

    # --- the connection --------------------------------------------------------------------

    async def connect(self) -> None:
        fleet = self.fleet
        self.lost = self._loop.create_future()
        try:
            await asyncio.wait_for(
                self._loop.create_connection(lambda: self, fleet.host, fleet.port),
                OPEN_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            self.failures.append(f"connect: {type(exc).__name__}: {exc}"[:200])
        finally:
            if self._transport is None and not self.lost.done():
                # Failed, or cancelled: no connection_lost will come.
                self.lost.set_result(None)
                self._settle()
                self.check_drained()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self.connections += 1
        self._timeout = self._loop.call_later(OPEN_TIMEOUT_S, self._fail,
                                              "no upgrade and welcome in time", CLOSE_AWAY)
        fleet = self.fleet
        transport.write(
            f"GET / HTTP/1.1\r\nHost: {fleet.host}:{fleet.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self._ws_key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._open = False
        if self._timeout is not None:
            self._timeout.cancel()
        if not self._close_got:
            self.closes.append(None)
            if not self._close_sent:
                self.failures.append(f"connection lost: {exc or 'closed without a close frame'}"
                                     [:200])
        self._settle()
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)
        if self.closes[-1:] == [ws_format.CLOSE_TRY_AGAIN] and not self.fleet.closing:
            self._retry()
        self.check_drained()

    def _retry(self) -> None:
        """The retry rule after a 1013 (storage full): connect again after the wait its
        reason gives, plus a random 0-50 %."""
        wait = ws_format.retry_wait(ws_format.retry_after(self.close_reason)
                                    or FALLBACK_RETRY_S, self.rng)
        self.full_waits.append(wait)
        self.retrying = True
        self._loop.call_later(wait, self._reconnect)

    def _reconnect(self) -> None:
        self.retrying = False
        if self.fleet.closing:
            self.check_drained()
            return
        self._new_connection()
        self._reconnecting = self._loop.create_task(self.connect())

    def close(self, code: int) -> None:
        """Start the closing handshake (bounded: the socket is aborted after the timeout)."""
        transport = self._transport
        if transport is None or self._close_sent:
            return
        self._open = False
        self._close_sent = True
        if self._upgraded:
            transport.write(self._frame(CLOSE, code.to_bytes(2, "big")))
        else:
            transport.close()
        if self._timeout is not None:
            self._timeout.cancel()
        self._timeout = self._loop.call_later(CLOSE_TIMEOUT_S, transport.abort)

    def _fail(self, why: str, code: int = CLOSE_PROTOCOL) -> None:
        self.failures.append(why[:200])
        self.close(code)

    def _settle(self) -> None:
        if not self._settled:
            self._settled = True
            self.fleet.settled()

    # --- measuring and sending -------------------------------------------------------------

    def tick(self, due: float) -> None:
        """Measure, and send at once when connected."""
        fleet = self.fleet
        seq = self.next_seq
        self.next_seq = seq + 1
        ts = ts_text(fleet.wall_start_us + round((self.ticks + self.phase) * fleet.period_us))
        self.ticks += 1
        step = self.rng.random
        self._values = values = [round(v + step() - 0.5, 2) for v in self._values]
        text = fleet.readings_format % (seq, ts, *values)
        message = Message(seq, text, 1, due)
        self.pending[seq] = message
        if self._open:
            now = self._loop.time()
            message.sends = 1
            message.sent_at = now
            self.lateness.append(now - due)
            assert self._transport is not None
            self._transport.write(self._frame(TEXT, text.encode()))

    def _frame(self, opcode: int, payload: bytes) -> bytes:
        """A final client frame: masked, as RFC 6455 requires of clients."""
        n = len(payload)
        if n < 126:
            header = bytes((0x80 | opcode, 0x80 | n))
        elif n < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        mask = self._masks.get(n)
        if mask is None:
            mask = int.from_bytes((self._key * (n // 4 + 1))[:n], "big")
            if n <= MAX_CACHED_MASK:
                self._masks[n] = mask
        return header + self._key + (int.from_bytes(payload, "big") ^ mask).to_bytes(n, "big")

    # --- what comes back -------------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.fleet.read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        data = self.fleet.read_buffer[:nbytes].tobytes()
        # The common case: one whole ack frame (unmasked, final, text, 7-bit length).
        if (nbytes < 128 and data[0] == 0x81 and data[1] == nbytes - 2 and not self._buffer
                and self.welcomed and data.startswith(ACK_PREFIX, 2) and data[-1] == 0x7D):
            seq = data[2 + len(ACK_PREFIX):-1]
            if seq.isdigit():
                self._ack(int(seq), self._loop.time())
                return
        self.data_received(data)

    def data_received(self, data: bytes) -> None:
        if self._close_got or (self._close_sent and not self._upgraded):
            return  # nothing more to read
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        if not self._upgraded:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if len(data) > MAX_HEAD_BYTES:
                    self._fail("upgrade response too long")
                else:
                    self._buffer = data
                return
            if not self._upgrade(data[:end]):
                return
            data = data[end + 4:]
        pos, size, now = 0, len(data), self._loop.time()
        while size - pos >= 2 and self._transport is not None and not self._close_got:
            b0, b1 = data[pos], data[pos + 1]
            length, head = b1 & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(data[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(data[pos + 2:pos + 10], "big"), 10
            if b1 & 0x80 or b0 & 0x70:
                self._fail(f"server frame masked or with RSV bits: {data[pos:pos + 2]!r}")
                return
            if length > MAX_FRAME_BYTES:
                self._fail(f"server frame of {length} bytes", CLOSE_TOO_BIG)
                return
            end = pos + head + length
            if end > size:
                break
            self._frame_received(b0, data[pos + head:end], now)
            pos = end
        if pos < size:
            self._buffer = data[pos:]

    def _upgrade(self, head: bytes) -> bool:
        """Check the answer to the upgrade request; send the hello."""
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        connection = {token.strip().lower() for token in headers.get("connection", "").split(",")}
        status = lines[0].split(" ", 2)
        if status[:2] != ["HTTP/1.1", "101"]:
            problem = f"upgrade refused: {lines[0]!r}"
        elif headers.get("upgrade", "").lower() != "websocket" or "upgrade" not in connection:
            problem = "101 without Upgrade: websocket and Connection: Upgrade"
        elif headers.get("sec-websocket-accept") != self._accept:
            problem = f"wrong Sec-WebSocket-Accept {headers.get('sec-websocket-accept')!r}"
        elif "sec-websocket-extensions" in headers or "sec-websocket-protocol" in headers:
            problem = "an extension or subprotocol it did not ask for"
        else:
            self._upgraded = True
            assert self._transport is not None
            self._transport.write(self._frame(TEXT, json.dumps(
                {"type": "hello", "device_id": self.device_id,
                 "sensors": list(self.fleet.sensors)}).encode()))
            return True
        self._fail(problem)
        return False

    def _frame_received(self, b0: int, payload: bytes, now: float) -> None:
        opcode = b0 & 0x0F
        if not b0 & 0x80 or opcode == CONT:
            self.unexpected.append("a fragmented message (not supported)")
            self.close(CLOSE_UNSUPPORTED)
        elif opcode == TEXT:
            self._message(payload, now)
        elif opcode == PING:
            if not self._close_sent:
                assert self._transport is not None
                self._transport.write(self._frame(PONG, payload))
        elif opcode == CLOSE:
            self._close_got = True
            self._open = False
            self.closes.append(int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None)
            self.close_reason = payload[2:].decode("utf-8", "replace")
            assert self._transport is not None
            if not self._close_sent:
                self._close_sent = True
                self._transport.write(self._frame(CLOSE, payload[:2]))
            self._transport.close()
        elif opcode != PONG:
            self.unexpected.append(f"a frame of opcode {opcode}: {payload[:100]!r}")

    def _message(self, payload: bytes, now: float) -> None:
        if (reply := decode_reply(self, payload)) is None:
            return
        kind, message = reply
        if kind == "ack" and self.welcomed:
            self._ack(message.get("seq"), now)
        elif kind == "command" and self.welcomed:
            take_command(self, message)
        elif kind == "welcome" and not self.welcomed:
            self._welcome(message)
        elif kind == "error" and message.get("error") == ws_format.STORAGE_FULL:
            self.full_errors += 1  # close 1013 follows: the retry rule
        else:
            self.unexpected.append(f"unexpected message: {payload[:200]!r}")
            if not self.welcomed:
                self._fail("hello not answered with a welcome")

    def _welcome(self, message: dict) -> None:
        session = message.get("session")
        self.started = isinstance(session, dict) and session.get("state") == "started"
        self.commands.append(Command("welcome", session.get("id") if isinstance(
            session, dict) else None, None, time.time(), self.connections))
        self.welcomed = self._open = True
        if self._timeout is not None:
            self._timeout.cancel()
            self._timeout = None
        self._settle()
        self._send_pending()

    def _send_pending(self) -> None:
        """After a reconnect: every unacknowledged message again, oldest first (measured
        while away, for the first time)."""
        now = self._loop.time()
        assert self._transport is not None
        for message in self.pending.values():
            if message.sends:
                self.resent += 1
            else:
                self.lateness.append(now - message.due)
            message.sends += 1
            message.sent_at = now
            self._transport.write(self._frame(TEXT, message.text.encode()))

    def _ack(self, seq: object, now: float) -> None:
        message = self.pending.get(seq) if type(seq) is int else None
        if message is None or not message.sends:
            again = type(seq) is int and seq in self.acked
            self.unexpected.append(f"ack of seq {seq!r}, " + (
                "acked already" if again else "which is not a message it sent"))
            return
        del self.pending[message.seq]
        message.acked_at = now
        self.acked[message.seq] = message
        self.latencies.append(now - message.sent_at)
        if not self.pending:
            self.check_drained()

    # --- draining --------------------------------------------------------------------------

    def check_drained(self) -> None:
        """Drained: measuring is over, and everything was acked or can no longer be."""
        if (not self.is_drained and self.fleet.ticking_over and not self.retrying
                and (not self.pending or self._transport is None)):
            self.mark_drained()

    def mark_drained(self) -> None:
        if not self.is_drained:
            self.is_drained = True
            self.fleet.drained()
