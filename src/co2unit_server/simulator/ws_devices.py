"""`co2unit-server simulate-ws`: simulated streaming devices against the WebSocket gateway.

Each device speaks docs/websocket.md: `hello`, then a `readings` message every 1/R s (1 to
--readings readings of a few named values each, `seq` increasing), without waiting for acks;
it keeps every message until its `ack` and, after a reconnect, sends the unacknowledged ones
again, oldest first, before the new ones. It goes on measuring while disconnected or paused
(the messages pile up), as a real device does, and records every session command it gets.
Faults, at a share of the ticks, in turns: a malformed message (an `error` is expected back;
it is no reading), an abrupt drop of the connection (no close handshake), a pause. A device
refused for a full disk (STORAGE_FULL, close 1013) follows the retry rule (ws_gateway's doc):
it waits the seconds the close reason gives, plus a random 0-50 %, before it connects again.

Then the fleet stops measuring, waits for its last acks and (own gateway) the gateway is
stopped with SIGTERM, which the devices must see as close 1001. The raw logs and the
`measurements` table are then held against what the devices sent and had acknowledged: every
acknowledged seq once in its device's raw log, as the very text sent, in seq order, with its
receipt; a logged seq never acknowledged only if the device sent it (the ack lost with a
dropped connection), never a malformed message's; every reading of every logged message once
in `measurements` (family ws) with its value, time, line and the line's session, and no other
row; nothing left unacknowledged, every malformed message answered with its error and no valid
one with any; with --sessions, only the run's sessions, and every device ending with none.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sqlite3
import sys
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from ..gateways import control
from ..records import ws_format
from ..records.rawlog import log_files, source_key, ts_text
from .common import (
    RunVerification,
    add_gateway_arguments,
    counts_text,
    duration,
    integer,
    percentile,
    positive,
    read_db,
    receipt_sources,
    run_dir,
    share,
    until_stored,
    verdict_lines,
)

FAULTS = ("malformed", "drop", "pause")
# The malformed messages a device sends, and the error code each must get back.
MALFORMED = {"not-json": "BAD_JSON", "bad-value": "BAD_MESSAGE", "binary": "BAD_MESSAGE"}
SENSORS = ("co2", "temperature", "humidity")
# Below the gateway's default ws_max_errors_per_minute (30): the errors, not the flood close.
MAX_MALFORMED_PER_MINUTE = 20
MAX_RATE = 1000.0  # messages per second per device
OPEN_TIMEOUT_S = 10.0
WELCOME_TIMEOUT_S = 10.0
DRAIN_S = 15.0  # how long a device waits for its last acks once it stopped measuring
CLOSE_WAIT_S = 30.0  # for every device to end once released
POLL_S = 0.25  # how often a device waiting for something else looks again
PAUSE_S = (0.2, 1.0)
BACKOFF_S = (0.05, 0.3)
FALLBACK_RETRY_S = 60.0  # after a 1013 whose reason gives no wait (the gateway's default)
CONNECTION_ERRORS = (OSError, TimeoutError, ConnectionClosed, InvalidHandshake)


@dataclass(slots=True)
class Message:
    """A readings message from its measurement to its ack (times: the event loop's clock)."""

    seq: int
    text: str
    readings: int
    due: float  # when it was measured (its tick)
    sent_at: float = 0.0  # its latest send
    sends: int = 0
    acked_at: float = 0.0


@dataclass(frozen=True)
class Command:
    """A session command a device got, or the session its welcome named ("welcome")."""

    command: str  # start | stop | welcome
    session: str | None
    at: str | None
    received: float  # wall clock (time.time()): comparable across processes
    connection: int


@dataclass
class FleetPlan:
    """What every device of a run is told."""

    uri: str
    rate: float  # messages per second per device
    readings: int = 3  # readings per message, at most (1 to this)
    faults: float = 0.0  # share of ticks with a fault
    seed: int = 1
    sensors: tuple[str, ...] = SENSORS
    follow_sessions: bool = False  # measure only while a session is started
    compression: str | None = None  # "deflate" to ask for permessage-deflate
    drain_s: float = DRAIN_S


class Fleet:
    """The schedule the devices share, set as the run goes: they connect at once, measure
    from `begin()` for `seconds`, drain, and end once `release` is set."""

    def __init__(self, plan: FleetPlan, size: int) -> None:
        self.plan = plan
        self.size = size
        self.go = asyncio.Event()
        self.release = asyncio.Event()
        self.all_connected = asyncio.Event()
        self.all_drained = asyncio.Event()
        self.start = self.end = self.drain_until = 0.0
        self.wall_start_us = 0
        self._connected: set[str] = set()
        self._drained = 0

    def begin(self, seconds: float, delay: float = 0.0) -> None:
        """Measure from `delay` s on, for `seconds`."""
        loop = asyncio.get_running_loop()
        self.start = loop.time() + delay
        self.end = self.start + seconds
        self.drain_until = self.end + self.plan.drain_s
        self.wall_start_us = time.time_ns() // 1000 + round(delay * 1e6)
        self.go.set()

    def connected(self, device_id: str) -> None:
        self._connected.add(device_id)
        if len(self._connected) == self.size:
            self.all_connected.set()

    def drained(self) -> None:
        self._drained += 1
        if self._drained == self.size:
            self.all_drained.set()


class StreamingDevice:
    """One streaming device: its messages until acknowledged, and what it met on the way."""

    def __init__(self, device_id: str, number: int, fleet: Fleet) -> None:
        self.device_id = device_id
        self.fleet = fleet
        self.rng = random.Random(f"{fleet.plan.seed}:{device_id}")
        self.next_seq = 1
        # Where in the period its ticks fall: a fleet in step would send in bursts.
        self.phase = self.rng.random()
        self.ticks = 0  # ticks passed: measured, or passed over while no session is started
        self.pending: dict[int, Message] = {}  # unacknowledged, oldest first
        self.acked: dict[int, Message] = {}
        self.unsent: deque[Message] = deque()  # not yet sent on this connection
        self.malformed: list[tuple[str, int | None]] = []  # kind, the seq it used
        self.expected_errors: deque[str] = deque()  # codes due on this connection
        self.errors: Counter[str] = Counter()
        self.unexpected: list[str] = []  # what the device did not expect: problems
        self.commands: list[Command] = []
        self.faults: Counter[str] = Counter()
        self.closes: list[int | None] = []
        self.connections = 0
        self.failures: list[str] = []  # connections that failed or broke, why
        self.retry_s: float | None = None  # the wait the last 1013 asked for
        self.full_waits: list[float] = []  # the waits taken after a 1013 (storage full)
        self.resent = 0
        self.repeat_acks = 0
        self.errors_lost = 0  # expected errors lost with a connection the device dropped
        self.latencies: list[float] = []  # s from a message's latest send to its ack
        self.lateness: list[float] = []  # s from a message's tick to its first send
        self.started = False  # a session is started, as far as the device knows
        self.paused_until = 0.0
        self.is_drained = False
        self.done = False
        self._drop = False
        self._turn = number  # the faults take turns from here: a short run has every kind
        self._malformed_turn = number
        self._malformed_times: deque[float] = deque()
        self._values = {name: 20.0 + 100.0 * i for i, name in enumerate(fleet.plan.sensors)}

    # --- the connection loop ------------------------------------------------------------

    async def run(self) -> None:
        """Connect, stream, drain; reconnect after a drop or failure until released."""
        while not self.done:
            try:
                await self._connection()
            except CONNECTION_ERRORS as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}"[:200])
            now = asyncio.get_running_loop().time()
            if self.fleet.go.is_set():
                await self._measure_due(None, now)  # disconnected, it goes on measuring
            self._check_drained(now)
            if self.is_drained:  # a connection closed after draining is the end (1001)
                self.done = True
            else:
                await asyncio.sleep(self._reconnect_wait())

    def _reconnect_wait(self) -> float:
        """The retry rule after a 1013 (storage full), else a short backoff."""
        if self.closes[-1:] != [ws_format.CLOSE_TRY_AGAIN]:
            return self.rng.uniform(*BACKOFF_S)
        if self.retry_s is None:
            self.unexpected.append("a 1013 close without the seconds to wait")
            self.retry_s = FALLBACK_RETRY_S
        wait = ws_format.retry_wait(self.retry_s, self.rng)
        self.full_waits.append(wait)
        return wait

    async def _connection(self) -> None:
        """One connection, until it closes or the device is done."""
        plan = self.fleet.plan
        ws = await connect(plan.uri, open_timeout=OPEN_TIMEOUT_S, compression=plan.compression,
                           close_timeout=5, proxy=None)
        self.connections += 1
        self.expected_errors.clear()
        dropped = False
        try:
            await ws.send(self._hello())
            welcomed = await self._welcome(ws)
            if welcomed is None:  # storage full: closed 1013, the retry rule applies
                return
            if not welcomed:
                self.done = True
                self._mark_drained()
                return
            self.fleet.connected(self.device_id)
            self.unsent = deque(self.pending.values())  # oldest first: seq order
            receiver = asyncio.get_running_loop().create_task(self._receive(ws))
            try:
                dropped = await self._stream(ws, receiver)
            finally:
                receiver.cancel()
                await asyncio.gather(receiver, return_exceptions=True)
        finally:
            await ws.close()  # at once when it is closed (or dropped) already
            self._closed(ws.close_code, dropped)
            if ws.close_code == ws_format.CLOSE_TRY_AGAIN:
                self.retry_s = ws_format.retry_after(ws.close_reason or "")

    def _closed(self, code: int | None, dropped: bool) -> None:
        self.closes.append(code)
        if dropped or code == ws_format.CLOSE_TRY_AGAIN:  # the gateway read no further
            self.errors_lost += len(self.expected_errors)
        elif self.expected_errors:
            self.unexpected.append(f"{len(self.expected_errors)} malformed messages got no "
                                   f"error before close {code}")
        self.expected_errors.clear()

    def _hello(self) -> str:
        return json.dumps({"type": "hello", "device_id": self.device_id,
                           "sensors": list(self.fleet.plan.sensors)})

    async def _welcome(self, ws: ClientConnection) -> bool | None:
        """Take the welcome (and its session); False when the hello was refused, None when
        it was refused for now (storage full: the gateway closes 1013)."""
        text = await asyncio.wait_for(ws.recv(), WELCOME_TIMEOUT_S)
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        if isinstance(message, dict) and message.get("error") == ws_format.STORAGE_FULL:
            self.errors[ws_format.STORAGE_FULL] += 1
            return None
        if not isinstance(message, dict) or message.get("type") != "welcome":
            self.unexpected.append(f"hello answered with {str(text)[:200]}")
            return False
        session = message.get("session")
        session_id = session.get("id") if isinstance(session, dict) else None
        self.started = isinstance(session, dict) and session.get("state") == "started"
        self.commands.append(Command("welcome", session_id, None, time.time(),
                                     self.connections))
        return True

    async def _stream(self, ws: ClientConnection, receiver: asyncio.Task) -> bool:
        """Measure, send and drain on one connection; True when the device dropped it."""
        loop = asyncio.get_running_loop()
        fleet = self.fleet
        while not receiver.done():
            now = loop.time()
            if fleet.go.is_set():
                await self._measure_due(ws, now)
            if now >= self.paused_until:
                await self._flush(ws, now)
            if self._drop:  # right after a send: its ack is lost, the device sends it again
                self._drop = False
                ws.transport.abort()  # no close frame: a lost link
                return True
            self._check_drained(now)
            if self.is_drained and fleet.release.is_set():
                await ws.close()
                self.done = True
                return False
            await asyncio.sleep(max(0.0, self._next_wake(now) - loop.time()))
        return False

    def _next_wake(self, now: float) -> float:
        wake = now + POLL_S
        fleet = self.fleet
        if fleet.go.is_set():
            tick = self._tick_time()
            if tick < fleet.end:
                wake = min(wake, tick)
        if self.paused_until > now:
            wake = min(wake, self.paused_until)
        return wake

    def _check_drained(self, now: float) -> None:
        """Drained: measuring is over and everything was acknowledged (or the wait is up)."""
        fleet = self.fleet
        if self.is_drained or not fleet.go.is_set() or now < fleet.end:
            return
        if (not self.pending and not self.expected_errors) or now >= fleet.drain_until:
            self._mark_drained()

    def _mark_drained(self) -> None:
        if not self.is_drained:
            self.is_drained = True
            self.fleet.drained()

    # --- measuring and sending ----------------------------------------------------------

    async def _measure_due(self, ws: ClientConnection | None, now: float) -> None:
        """Measure every tick due by now; connected (`ws`), a current tick may bring a
        fault."""
        fleet = self.fleet
        period = 1 / fleet.plan.rate
        while True:
            tick = self._tick_time()
            if tick > now or tick >= fleet.end:
                return
            if ws is not None and now - tick < period:  # not one caught up after an outage
                await self._fault(ws, now)
            if self.started or not fleet.plan.follow_sessions:
                self._measure(tick)
            self.ticks += 1

    def _tick_time(self) -> float:
        """When the next tick is due (the event loop's clock)."""
        return self.fleet.start + (self.ticks + self.phase) / self.fleet.plan.rate

    def _measure(self, due: float) -> None:
        plan = self.fleet.plan
        period_us = round(1e6 / plan.rate)
        first_us = self.fleet.wall_start_us + round((self.ticks + self.phase) * period_us)
        count = self.rng.randint(1, plan.readings)
        readings = [{"ts": ts_text(first_us + j * period_us // count) + "Z",
                     "values": self._read_sensors()} for j in range(count)]
        seq = self._take_seq()
        text = json.dumps({"type": "readings", "seq": seq, "readings": readings},
                          separators=(",", ":"))
        message = Message(seq, text, count, due)
        self.pending[seq] = message
        self.unsent.append(message)

    def _read_sensors(self) -> dict[str, float]:
        for name, value in self._values.items():
            self._values[name] = round(value + self.rng.gauss(0, 0.5), 2)
        return dict(self._values)

    def _take_seq(self) -> int:
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        return seq

    async def _flush(self, ws: ClientConnection, now: float) -> None:
        """Send what this connection has not had yet, oldest first."""
        loop = asyncio.get_running_loop()
        while self.unsent:
            message = self.unsent.popleft()
            if message.seq not in self.pending:
                continue  # acknowledged meanwhile (an ack of its earlier send)
            if message.sends:
                self.resent += 1
            else:
                self.lateness.append(now - message.due)
            message.sends += 1
            message.sent_at = loop.time()
            await ws.send(message.text)

    async def _fault(self, ws: ClientConnection, now: float) -> None:
        if self.fleet.plan.faults <= 0 or self.rng.random() >= self.fleet.plan.faults:
            return
        kind = FAULTS[self._turn % len(FAULTS)]
        self._turn += 1
        if kind == "drop":
            self._drop = True
        elif kind == "pause":
            self.paused_until = max(self.paused_until, now + self.rng.uniform(*PAUSE_S))
        elif not await self._send_malformed(ws, now):
            return
        self.faults[kind] += 1

    async def _send_malformed(self, ws: ClientConnection, now: float) -> bool:
        """Send a malformed message (an error is due); False when over the device's budget."""
        while self._malformed_times and now - self._malformed_times[0] > 60:
            self._malformed_times.popleft()
        if len(self._malformed_times) >= MAX_MALFORMED_PER_MINUTE:
            return False
        self._malformed_times.append(now)
        kind = list(MALFORMED)[self._malformed_turn % len(MALFORMED)]
        self._malformed_turn += 1
        seq = None
        payload: str | bytes
        if kind == "not-json":
            payload = '{"type": "readings", "seq": '
        elif kind == "binary":
            payload = b"\x00readings"
        else:  # a seq of its own, never to be stored: the verifier checks it is not
            seq = self._take_seq()
            payload = json.dumps({"type": "readings", "seq": seq, "readings": [
                {"ts": ts_text(time.time_ns() // 1000) + "Z", "values": {"co2": "high"}}]})
        self.malformed.append((kind, seq))
        self.expected_errors.append(MALFORMED[kind])
        await ws.send(payload)
        return True

    # --- what comes back ----------------------------------------------------------------

    async def _receive(self, ws: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionClosed):
            async for text in ws:
                self._handle(text, loop.time())

    def _handle(self, text: str | bytes, now: float) -> None:
        if (reply := decode_reply(self, text)) is None:
            return
        kind, message = reply
        if kind == "ack":
            self._ack(message.get("seq"), now)
        elif kind == "command":
            self._command(message)
        elif kind == "error":
            self._error(message)
        else:
            self.unexpected.append(f"unexpected message: {str(text)[:200]}")

    def _ack(self, seq: object, now: float) -> None:
        message = self.pending.pop(seq, None)  # type: ignore[arg-type]
        if message is not None:
            message.acked_at = now
            self.acked[message.seq] = message
            self.latencies.append(now - message.sent_at)
        elif seq in self.acked:
            self.repeat_acks += 1  # the ack of a resend whose first ack came late
        else:
            self.unexpected.append(f"ack of seq {seq!r}, which was never sent as readings")

    def _command(self, message: dict) -> None:
        take_command(self, message)

    def _error(self, message: dict) -> None:
        code = message.get("error")
        self.errors[str(code)] += 1
        if code == ws_format.STORAGE_FULL:
            return  # for the message after the acknowledged ones; close 1013 follows
        if not self.expected_errors:
            self.unexpected.append(f"error {code} for a valid message: {message.get('message')}")
            return
        expected = self.expected_errors.popleft()
        if code != expected:
            self.unexpected.append(f"error {code} for a malformed message, expected {expected}")


async def run_fleet(devices: list[StreamingDevice], fleet: Fleet, seconds: float,
                    on_drained: Callable[[], Awaitable[None]] | None = None,
                    during: Callable[[], Awaitable[None]] | None = None) -> None:
    """Run the devices: measure for `seconds`, drain, call `on_drained` (e.g. stop the
    gateway), release them; `during` runs alongside the measuring (e.g. sessions)."""
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(d.run()) for d in devices]
    fleet.begin(seconds)
    side = loop.create_task(during()) if during is not None else None
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(fleet.all_drained.wait(), seconds + fleet.plan.drain_s + 5)
    if side is not None:
        await side
    if on_drained is not None:
        await on_drained()
    fleet.release.set()
    await finish_devices(tasks)


async def finish_devices(tasks: list[asyncio.Task]) -> None:
    """Wait for released devices (bounded), cancel what lingers; a device's bug is raised."""
    if not tasks:
        return
    _, lingering = await asyncio.wait(tasks, timeout=CLOSE_WAIT_S)
    for task in lingering:
        task.cancel()
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, Exception):
            raise outcome


# --- verification -----------------------------------------------------------------------------

@dataclass
class Verification(RunVerification):
    """What the raw logs and the table say about a run of streaming devices."""

    acked_messages: int = 0
    stored_unacked: int = 0  # stored, never acknowledged (the ack lost with its connection)
    resent_stored_once: int = 0  # sent more than once, in the raw log once
    sessions_seen: set[str] = field(default_factory=set)


def ws_lines(device_dir: Path) -> list[tuple[str, ws_format.WsLine | None]]:
    """(source, line or None when unreadable) of every complete line of a device's logs."""
    found = []
    for path in log_files(device_dir):
        with open(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                if not raw.endswith(b"\n"):
                    break
                try:
                    line = ws_format.WsLine.parse(raw)
                except (ValueError, KeyError, TypeError):
                    line = None
                found.append((source_key(path, number), line))
    return found


def table_rows(conn: sqlite3.Connection, device: str) -> dict[tuple[str, str], tuple]:
    """A device's measurements by (ts, name): (value, source, session, family)."""
    return {(ts, name): (value, source, session, family)
            for ts, name, value, source, session, family in conn.execute(
                "SELECT ts, name, value, source, session, family FROM measurements "
                "WHERE device = ?", (device,))}


class DeviceCheck:
    """Holds one device's raw log and rows against what it sent and had acknowledged."""

    def __init__(self, device: StreamingDevice, result: Verification) -> None:
        self.device = device
        self.result = result

    def problem(self, text: str) -> None:
        self.result.problems.append(f"{self.device.device_id}: {text}")

    def run(self, lines: list[tuple[str, ws_format.WsLine | None]],
            rows: dict[tuple[str, str], tuple], receipts: set[str]) -> None:
        device = self.device
        self.result.lines += len(lines)
        self.result.acked_messages += len(device.acked)
        by_seq = self.logged(lines, receipts)
        expected: dict[tuple[str, str], tuple] = {}
        for seq, (source, line) in by_seq.items():
            message = device.acked.get(seq) or device.pending.get(seq)
            if message is None:
                self.problem(f"{source}: seq {seq} was never sent as readings")
                continue
            if seq not in device.acked:
                self.result.stored_unacked += 1
            if message.sends > 1:
                self.result.resent_stored_once += 1
            if line.raw != message.text:
                self.problem(f"{source}: the line is not the message seq {seq} as sent")
                continue
            if line.session is not None:
                self.result.sessions_seen.add(line.session)
            for ts, name, value in ws_format.check_readings(ws_format.parse(line.raw)).rows:
                expected[ts, name] = (value, source, line.session, ws_format.FAMILY)
        missing = [seq for seq in device.acked if seq not in by_seq]
        if missing:
            self.problem(f"{len(missing)} acknowledged messages are not in the raw log "
                         f"(first: seq {missing[0]})")
        self.rows(expected, rows)

    def logged(self, lines: list[tuple[str, ws_format.WsLine | None]],
               receipts: set[str]) -> dict[int, tuple[str, ws_format.WsLine]]:
        """The raw log's lines by seq; each seq once, in seq order, each with its receipt."""
        by_seq: dict[int, tuple[str, ws_format.WsLine]] = {}
        last = 0
        for source, line in lines:
            if line is None:
                self.problem(f"{source} is not a readable raw log line")
                continue
            if line.seq in by_seq:
                self.problem(f"seq {line.seq} logged twice: {by_seq[line.seq][0]} and {source}")
                continue
            if line.seq < last:
                self.problem(f"{source}: seq {line.seq} logged after seq {last}")
            last = max(last, line.seq)
            if source not in receipts:
                self.problem(f"{source} has no gateway receipt")
            by_seq[line.seq] = (source, line)
        return by_seq

    def rows(self, expected: dict[tuple[str, str], tuple],
             found: dict[tuple[str, str], tuple]) -> None:
        """Every reading of every stored message once, with its value, line and session."""
        self.result.rows_expected += len(expected)
        self.result.rows_found += len(found)
        missing = expected.keys() - found.keys()
        extra = found.keys() - expected.keys()
        wrong = [key for key in expected.keys() & found.keys() if found[key] != expected[key]]
        if missing:
            first = min(missing)
            self.problem(f"{len(missing)} readings not in the table (first: {first[1]} at "
                         f"{first[0]}, from {expected[first][1]})")
        if extra:
            self.problem(f"{len(extra)} rows no stored message holds (first: {min(extra)})")
        if wrong:
            key = min(wrong)
            self.problem(f"{key[1]} at {key[0]} is stored as {found[key]}, expected "
                         f"{expected[key]}")


def device_problems(device: StreamingDevice) -> list[str]:
    """What the device itself saw go wrong: unexpected answers, messages never acknowledged."""
    problems = [f"{device.device_id}: {text}" for text in device.unexpected[:3]]
    if not device.connections:
        problems.append(f"{device.device_id}: never connected "
                        f"({device.failures[-1] if device.failures else 'not tried'})")
    if device.pending:
        problems.append(f"{device.device_id}: {len(device.pending)} messages never "
                        f"acknowledged (first: seq {min(device.pending)})")
    return problems


def verify(devices: list[StreamingDevice], remote_data: Path, db_path: Path,
           expect_close: int | None = None, sessions: set[str] | None = None) -> Verification:
    """Hold the raw logs and the table against what the devices sent and had acknowledged;
    `expect_close`: the code every device's last connection must have closed with;
    `sessions`: every session that may appear (None: any)."""
    result = Verification([p for device in devices for p in device_problems(device)])

    def check(conn: sqlite3.Connection) -> None:
        for device in devices:
            DeviceCheck(device, result).run(
                ws_lines(remote_data / ws_format.FAMILY / device.device_id),
                table_rows(conn, device.device_id), receipt_sources(conn, device.device_id))

    read_db(db_path, result.problems, check)
    if expect_close is not None:
        result.problems += [f"{d.device_id}: last close {d.closes[-1:]}, expected {expect_close}"
                            for d in devices if d.closes[-1:] != [expect_close]]
    if sessions is not None:
        result.problems += [f"session {s} is in the raw logs, but the run started no such one"
                            for s in sorted(result.sessions_seen - sessions)]
        result.problems += check_commands(devices, sessions)
    return result


class CommandTaker(Protocol):
    """What decode_reply and take_command keep up to date (simulate-ws's devices and the
    benchmark's)."""

    unexpected: list[str]
    started: bool
    commands: list[Command]
    connections: int


def decode_reply(device: CommandTaker, data: str | bytes) -> tuple[object, dict] | None:
    """A message from the gateway as (its type, itself); None, noted, unless a JSON object."""
    try:
        message = json.loads(data)
        return message.get("type"), message
    except (ValueError, AttributeError):
        device.unexpected.append(f"not a JSON object: {data[:200]!r}")
        return None


def take_command(device: CommandTaker, message: dict) -> None:
    """A session command the device got: it follows it, noting what and when (wall clock)."""
    command = message.get("command")
    if command not in ("start", "stop"):
        device.unexpected.append(f"unknown command {command!r}")
        return
    device.started = command == "start"
    device.commands.append(Command(command, message.get("session"), message.get("at"),
                                   time.time(), device.connections))


def check_commands(devices: list[StreamingDevice], sessions: set[str]) -> list[str]:
    """Every command names a session of the run, and every device ends knowing none runs."""
    problems = []
    for device in devices:
        named = {c.session for c in device.commands if c.session is not None}
        if named - sessions:
            problems.append(f"{device.device_id}: commands of unknown sessions "
                            f"{sorted(named - sessions)}")
        if sessions and device.started:
            problems.append(f"{device.device_id}: missed the stop of the last session")
    return problems


# --- running it ---------------------------------------------------------------------------------

@dataclass
class SimConfig:
    """Everything a `simulate-ws` run can be told."""

    devices: int = 5
    rate: float = 5.0
    seconds: float = 10.0
    faults: float = 0.2
    readings: int = 3
    seed: int = 1
    sessions: int = 0  # sessions started and stopped during the run (needs the control socket)
    follow_sessions: bool = False
    host: str = "127.0.0.1"
    port: int | None = None  # None: a gateway of our own, in a temp dir
    remote_data: Path | None = None
    var_dir: Path | None = None
    keep: Path | None = None
    prefix: str = "wsim"


@dataclass
class RunResult:
    cfg: SimConfig
    devices: list[StreamingDevice]
    wall_s: float
    sessions: list[str]
    verification: Verification | None = None
    gateway_exit: int | None = None

    @property
    def problems(self) -> list[str]:
        """The verification's problems; unverified, what the devices saw themselves."""
        if self.verification is None:
            return [p for device in self.devices for p in device_problems(device)]
        return self.verification.problems

    @property
    def passed(self) -> bool:
        return not self.problems and self.gateway_exit in (None, 0)

    def summary(self) -> str:
        devices = self.devices
        acked = [m for d in devices for m in d.acked.values()]
        readings = sum(m.readings for m in acked)
        faults = sum((d.faults for d in devices), Counter())
        errors = sum((d.errors for d in devices), Counter())
        closes = Counter(code for d in devices for code in d.closes)
        latencies = [x for d in devices for x in d.latencies]
        commands = Counter(c.command for d in devices for c in d.commands)
        lines = [
            f"devices {len(devices)}  rate {self.cfg.rate:g}/s each  {self.cfg.seconds:g} s  "
            f"faults {self.cfg.faults:g}  wall time {self.wall_s:.1f} s",
            f"messages acked {len(acked)} ({readings} readings)  pending "
            f"{sum(len(d.pending) for d in devices)}  resent {sum(d.resent for d in devices)}  "
            f"repeat acks {sum(d.repeat_acks for d in devices)}",
            f"faults: {counts_text(faults) or 'none'}; errors back: "
            f"{counts_text(errors) or 'none'} (lost with a drop "
            f"{sum(d.errors_lost for d in devices)})",
            f"connections {sum(d.connections for d in devices)} (failed "
            f"{sum(len(d.failures) for d in devices)}); closes: {counts_text(closes)}",
            f"ack latency p50 {percentile(latencies, 0.5) * 1000:.1f} ms, p99 "
            f"{percentile(latencies, 0.99) * 1000:.1f} ms, max "
            f"{max(latencies, default=0) * 1000:.1f} ms",
        ]
        if self.sessions or commands["start"] or commands["stop"]:
            lines.append(f"sessions started {len(self.sessions)}; commands received: "
                         f"{counts_text(commands)}")
        v = self.verification
        if v is None:
            lines.append("not held against raw logs and table (give --remote-data and "
                         "--var-dir with --port)")
        else:
            lines.append(f"raw log lines {v.lines} (sent more than once, logged once: "
                         f"{v.resent_stored_once}; stored, never acknowledged: "
                         f"{v.stored_unacked})  rows {v.rows_found}/{v.rows_expected}")
        if self.gateway_exit not in (None, 0):
            lines.append(f"problem: the gateway exited with {self.gateway_exit}")
        return "\n".join(lines + verdict_lines(self.problems, self.passed))


def make_devices(cfg: SimConfig, fleet: Fleet) -> list[StreamingDevice]:
    return [StreamingDevice(f"{cfg.prefix}-{i:04d}", i, fleet)
            for i in range(1, cfg.devices + 1)]


def run_sessions(socket_path: Path, count: int, seconds: float,
                 started: list[str]) -> Callable[[], Awaitable[None]]:
    """A coroutine function that starts and stops `count` sessions spread over the run (their
    ids into `started`)."""

    async def cycle() -> None:
        loop = asyncio.get_running_loop()
        begin = loop.time()
        for i in range(count):
            for at, command in (((i + 0.25) / count, "session-start"),
                                ((i + 0.75) / count, "session-stop")):
                await asyncio.sleep(max(0.0, begin + at * seconds - loop.time()))
                answer = await asyncio.to_thread(control.call, socket_path, command,
                                                 name=f"simulate-ws {i + 1}")
                if not answer.get("ok"):
                    raise RuntimeError(f"{command}: {answer.get('error')}")
                if command == "session-start":
                    started.append(answer["session"]["id"])

    return cycle


def simulate(cfg: SimConfig, port: int,
             on_drained: Callable[[], Awaitable[None]] | None = None) -> RunResult:
    """Run the fleet against 127.0.0.1:port (not verified yet)."""
    plan = FleetPlan(f"ws://{cfg.host}:{port}/", cfg.rate, cfg.readings, cfg.faults, cfg.seed,
                     follow_sessions=cfg.follow_sessions)
    started: list[str] = []

    async def main() -> list[StreamingDevice]:
        fleet = Fleet(plan, cfg.devices)
        devices = make_devices(cfg, fleet)
        during = None
        if cfg.sessions and cfg.var_dir is not None:
            during = run_sessions(cfg.var_dir / "gateways.sock", cfg.sessions, cfg.seconds,
                                  started)
        await run_fleet(devices, fleet, cfg.seconds, on_drained, during)
        return devices

    began = time.monotonic()
    devices = asyncio.run(main())
    return RunResult(cfg, devices, time.monotonic() - began, started)


def run_against(cfg: SimConfig) -> RunResult:
    """Run against a gateway already running; verify when its data dirs are given."""
    assert cfg.port is not None
    result = simulate(cfg, cfg.port)
    if cfg.remote_data is not None and cfg.var_dir is not None:
        remote_data, db_path = cfg.remote_data, cfg.var_dir / "db.sqlite3"
        sessions = set(result.sessions) if cfg.sessions else None
        result.verification = until_stored(
            lambda: verify(result.devices, remote_data, db_path, sessions=sessions),
            # No wait makes what the devices saw themselves go away.
            settled=lambda: any(device_problems(d) for d in result.devices))
    return result


def run_own_gateway(cfg: SimConfig) -> RunResult:
    """Start a gateway (in a temp dir or cfg.keep), run against it, stop it with SIGTERM,
    verify."""
    from .launcher import GatewayProcess, free_port

    with run_dir(cfg.keep, "simulate-ws-") as base:
        gateway = GatewayProcess(base, {"ws_gateway_port": str(free_port())}).start()
        stopped: list[int | None] = []

        async def stop_gateway() -> None:  # the devices, still connected, see it go: 1001
            stopped.append(await asyncio.to_thread(gateway.stop))

        try:
            own = replace(cfg, var_dir=gateway.var_dir)
            result = simulate(own, int(gateway.settings["ws_gateway_port"]), stop_gateway)
        finally:
            gateway.kill()
        result.gateway_exit = stopped[0] if stopped else None
        if result.gateway_exit != 0:
            print(gateway.log_text()[-3000:], file=sys.stderr)
        result.verification = verify(result.devices, gateway.remote_data,
                                     gateway.var_dir / "db.sqlite3", expect_close=1001,
                                     sessions=set(result.sessions))
        return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", type=integer(1, 10000), default=5,
                   help="streaming devices (default: %(default)s)")
    p.add_argument("--rate", type=positive(MAX_RATE), default=5.0,
                   help="readings messages per second per device (default: %(default)s)")
    p.add_argument("--seconds", type=duration, default=10.0,
                   help="how long the devices measure (default: %(default)s)")
    p.add_argument("--faults", type=share, default=0.2,
                   help=f"share of ticks with a fault, in turns: {', '.join(FAULTS)} "
                   "(default: %(default)s)")
    p.add_argument("--readings", type=integer(1, 100), default=3,
                   help="readings per message, at most (1 to this; default: %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="seed of values and faults")
    p.add_argument("--sessions", type=integer(0, 100), default=0,
                   help="sessions to start and stop during the run through the gateway's "
                   "control socket (own gateway, or with --var-dir; default: none)")
    p.add_argument("--follow-sessions", action="store_true",
                   help="devices measure only while a session is started")
    add_gateway_arguments(p, "WebSocket", "with --port: the gateway's var dir (db.sqlite3, "
                          "gateways.sock), to verify the result and run --sessions")
    p.add_argument("--keep", type=Path, metavar="DIR",
                   help="without --port: run the own gateway in DIR and keep it")


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run the devices, print the summary; exit status 1 on FAIL."""
    if args.sessions and args.port is not None and args.var_dir is None:
        print("co2unit-server simulate-ws: --sessions with --port needs --var-dir",
              file=sys.stderr)
        return 2
    # Against a long-lived gateway, device ids of their own: its raw logs hold earlier runs'
    # lines under the same seqs, which the verification would read as this run's.
    prefix = "wsim" if args.port is None else f"wsim-{datetime.now(UTC):%Y%m%d%H%M%S%f}"
    cfg = SimConfig(devices=args.devices, rate=args.rate, seconds=args.seconds,
                    faults=args.faults, readings=args.readings, seed=args.seed,
                    sessions=args.sessions, follow_sessions=args.follow_sessions,
                    host=args.host, port=args.port, remote_data=args.remote_data,
                    var_dir=args.var_dir, keep=args.keep, prefix=prefix)
    try:
        result = run_own_gateway(cfg) if cfg.port is None else run_against(cfg)
    except (OSError, RuntimeError, InvalidURI, control.GatewayUnavailable) as exc:
        print(f"co2unit-server simulate-ws: {exc!r}\nFAIL", file=sys.stderr)
        return 1
    print(result.summary())
    if args.keep:
        print(f"kept in {args.keep}")
    return 0 if result.passed else 1
