"""Emulated NodeMCU air-state devices on loopback, and `co2unit-server simulate-pull`.

Each emulated device listens on a 127.0.0.1 port of its own and answers `GET /circumstances`
as the firmware (straightchlorine/arduino-air-state-server, nodemcu.ino) does: 200,
application/json, compact JSON in its key order, every value a string with two decimals, the
sensors its firmware age has. Fault modes: `boot` (values "" for a few seconds after each
(re)boot, the DS18B20 mean "0.00" from its zeroed slots; reboots close the port for a while and
recalibrate the MQ135), `hang` (takes the request, never answers), `status` (500 or 404),
`garbage` (a 200 that is no answer), `nan` ("nan"/"ovf"/"inf" values), `refuse` (port closed),
`slow` (answers late, within the collector's timeout), `reset` (takes the request, resets the
connection). Every answer sent is recorded with its
values and the time it was sent, so that `verify_pull` can hold the collector's raw logs and
tables against what was really sent.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import random
import socket
import sqlite3
import struct
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..database.db import connect_readonly
from ..gateways.process import raise_open_file_limit
from ..records import rawlog
from ..records.pull_format import PullDevice
from .common import (
    counts_text,
    duration,
    integer,
    percentile,
    run_dir,
    share,
    verdict_lines,
)
from .launcher import GatewayProcess, free_port

HOST = "127.0.0.1"
PATH = "/circumstances"
REFRESH_S = 1.3  # the firmware's loop: sensors read, 500 ms delay
BOOT_S = 4.0  # setup() blinks for 4 s after the server starts, before the first read
FIRMWARES = {  # firmware age: the sensors its answer has
    "2024-05-01": ("mq135", "bmp180"),
    "2024-05-16": ("mq135", "bmp180", "ds18b20"),
    "current": ("mq135", "bmp180", "ds18b20", "dht22"),
}
FAULTS = ("boot", "hang", "status", "garbage", "nan", "refuse", "slow", "reset")
# MQUnifiedsensor's regression, ppm = a * (Rs/R0)^b, with the firmware's (a, b) in its order.
MQ135_CURVES = {"co": (605.18, -3.937), "co2": (110.47, -2.862), "alcohol": (77.255, -3.18),
                "nh4": (102.2, -2.473), "aceton": (34.668, -3.369), "toulen": (44.947, -3.445)}
CLEAN_AIR_RATIO = 4.0  # gives the docs/gateways.md example's MQ135 values
# What the float formatter printed in the `nan` fault: a failed MQ135 calibration and more.
NAN_TEXTS = {**{f"mq135.{gas}": "nan" for gas in MQ135_CURVES},
             "bmp180.altitude": "ovf", "dht22.humidity": "inf"}
PROBE_MEAN = "ds18b20.temperature"
PROBE_SLOTS = 8
MISSING_PROBE_C = -127.0
LOWEST_PROBE_MEAN_C = -55.0  # below the DS18B20's range: a missing probe in the mean
HEAD_TIMEOUT_S = 10.0
STATUS_BODIES = {404: b"", 500: b"Internal Server Error"}
REASONS = {200: "OK", 404: "Not Found", 500: "Internal Server Error"}


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class DeviceSpec:
    """One emulated device: its firmware, fault and quirks."""

    name: str
    fault: str = ""  # one of FAULTS, or "" for a healthy device
    firmware: str = "current"
    missing_probes: int = 0  # DS18B20 slots without a probe (each counts -127 in the mean)
    steady: bool = False  # values never change
    status: int = 500  # the `status` fault's answer
    boot_s: float = BOOT_S  # `boot`: values "" this long after each (re)boot
    reboot_every_s: float = 0.0  # `boot`: reboots this often (0: boots once, at the start)
    down_s: float = 1.0  # `boot`: port closed this long while rebooting
    delay_s: float = 0.5  # `slow`: answers after this long
    seed: int = 0

    @property
    def healthy(self) -> bool:
        """Answers every poll with values, so the collector keeps it on schedule."""
        return not self.fault


@dataclass(frozen=True)
class SentAnswer:
    """An answer the emulator sent: when, what, and which values in it are real readings."""

    device: str
    arrived_us: int
    sent_us: int
    status: int
    body: bytes
    values: tuple[tuple[str, float], ...]  # the real readings, as sent
    unusable: tuple[str, ...]  # names whose value is no reading ("", nan, zeroed, ...)

    @property
    def verdict(self) -> str:
        """The verdict the collector must give it."""
        if self.status != 200 or not self.values:
            return "bad"
        return "partial" if self.unusable else "ok"


def sensor_values(spec: DeviceSpec, boot_no: int, refresh_no: int) -> dict[str, float]:
    """The device's readings at one refresh of one boot, by name, in the firmware's order."""
    place = random.Random(f"{spec.seed}/{spec.name}")  # the device's room: its usual values
    room_c, room_hpa = place.uniform(18, 28), place.uniform(995, 1020)
    room_rh = place.uniform(30, 60)
    calibration = random.Random(f"{spec.seed}/{spec.name}/{boot_no}").uniform(0.85, 1.15)
    rng = random.Random(f"{spec.seed}/{spec.name}/{boot_no}/{refresh_no}")  # this read's noise
    ratio = CLEAN_AIR_RATIO * calibration * rng.uniform(0.98, 1.02)
    pressure = room_hpa + rng.uniform(-0.2, 0.2)
    sea_level = pressure / (1 - 150 / 44330) ** 5.255  # from the fixed 150 m
    second_read = pressure + rng.uniform(-0.05, 0.05)  # readAltitude reads the pressure again
    probes = [room_c + rng.uniform(-1, 1) for _ in range(PROBE_SLOTS - spec.missing_probes)]
    sensors = {
        "mq135": {gas: a * ratio ** b + (400.0 if gas == "co2" else 0.0)
                  for gas, (a, b) in MQ135_CURVES.items()},
        "bmp180": {"temperature": room_c + 1.5 + rng.uniform(-0.2, 0.2), "pressure": pressure,
                   "seaLevelPressure": sea_level,
                   "altitude": 44330 * (1 - (second_read / sea_level) ** (1 / 5.255))},
        "ds18b20": {"temperature": (sum(probes) + MISSING_PROBE_C * spec.missing_probes)
                    / PROBE_SLOTS},
        "dht22": {"temperature": room_c + rng.uniform(-0.3, 0.3),
                  "humidity": room_rh + rng.uniform(-1, 1)},
    }
    return {f"{sensor}.{key}": value for sensor in FIRMWARES[spec.firmware]
            for key, value in sensors[sensor].items()}


def reading_texts(spec: DeviceSpec, values: Mapping[str, float],
                  booting: bool) -> list[tuple[str, str, bool]]:
    """(name, text as sent, whether it is a real reading) of every value."""
    texts = []
    for name, value in values.items():
        if booting:
            # Until the first read every String is "", the DS18B20 mean is of zeroed floats.
            texts.append((name, "0.00" if name == PROBE_MEAN else "", False))
        elif spec.fault == "nan" and name in NAN_TEXTS:
            texts.append((name, NAN_TEXTS[name], False))
        else:
            text = f"{value:.2f}"
            texts.append((name, text, name != PROBE_MEAN or float(text) >= LOWEST_PROBE_MEAN_C))
    return texts


def answer_body(texts: list[tuple[str, str, bool]]) -> bytes:
    """The firmware's JSON: {"nodemcu":{sensor:{key:"text",...},...}}, compact."""
    sensors: dict[str, dict[str, str]] = {}
    for name, text, _ in texts:
        sensor, key = name.split(".", 1)
        sensors.setdefault(sensor, {})[key] = text
    return json.dumps({"nodemcu": sensors}, separators=(",", ":")).encode()


def garbage_body(rng: random.Random) -> bytes:
    """A 200 answer that gives no value: cut JSON, binary noise, or another device's JSON."""
    return rng.choice([b'{"nodemcu":{"mq135":{"co":"2.5', bytes(rng.randrange(256)
                       for _ in range(40)), b'{"esp8266":{"uptime":"12"}}', b"<html>oops</html>"])


def http_head(status: int, content_type: str, length: int) -> bytes:
    """ESPAsyncWebServer's response head (it always closes the connection)."""
    return (f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nConnection: close\r\n"
            f"Accept-Ranges: none\r\nContent-Length: {length}\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode()


class EmulatedDevice:
    """One device: its listening port, its answers, and the record of what it sent."""

    def __init__(self, spec: DeviceSpec) -> None:
        self.spec = spec
        self.port = 0
        self.answers: list[SentAnswer] = []
        self.arrivals_us: list[int] = []  # when each request (head) came in
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task] = set()
        self._boot_no = 0
        self._boot_at = time.monotonic()
        self._rng = random.Random(f"{spec.seed}/{spec.name}")
        self._reboots: asyncio.Task | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{PATH}"

    async def start(self) -> None:
        if self.spec.fault == "refuse":
            self.port = free_port()  # nothing listens there
            return
        await self._listen()
        if self.spec.fault == "boot" and self.spec.reboot_every_s > 0:
            self._reboots = asyncio.create_task(self._reboot_forever())

    async def close(self) -> None:
        if self._reboots is not None:
            self._reboots.cancel()
            await asyncio.gather(self._reboots, return_exceptions=True)
        await self._go_down()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, HOST, self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _go_down(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for handler in list(self._handlers):
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _reboot_forever(self) -> None:
        while True:
            await asyncio.sleep(self.spec.reboot_every_s)
            await self._go_down()
            await asyncio.sleep(self.spec.down_s)
            self._boot_no += 1  # the MQ135 recalibrates at boot
            self._boot_at = time.monotonic()
            await self._listen()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
            arrived = now_us()
            self.arrivals_us.append(arrived)
            await self._answer(head, arrived, reader, writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ConnectionError, asyncio.CancelledError):
            pass  # the collector went away, or the emulator is shutting down
        finally:
            self._handlers.discard(task)
            writer.close()  # the firmware closes after every answer

    async def _answer(self, head: bytes, arrived: int, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        if self.spec.fault == "hang":
            await reader.read()  # until the collector gives up and closes
            return
        if self.spec.fault == "reset":
            # Linger 0: closing sends a RST, as a device that crashes mid-request would.
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                       struct.pack("ii", 1, 0))
            return
        if self.spec.fault == "slow":
            await asyncio.sleep(self.spec.delay_s)
        status, content_type, body, texts = self._reply(head)
        sent = now_us()
        writer.write(http_head(status, content_type, len(body)) + body)
        await writer.drain()
        values = tuple((name, float(text)) for name, text, real in texts if real)
        unusable = tuple(name for name, _, real in texts if not real)
        self.answers.append(SentAnswer(self.spec.name, arrived, sent, status, body, values,
                                       unusable))

    def _reply(self, head: bytes) -> tuple[int, str, bytes, list[tuple[str, str, bool]]]:
        """Status, content type, body and the values in it (name, text, real)."""
        method, _, rest = head.partition(b" ")
        if method != b"GET" or rest.split(b" ", 1)[0].split(b"?")[0] != PATH.encode():
            return 404, "text/plain", b"", []
        if self.spec.fault == "status":
            return self.spec.status, "text/plain", STATUS_BODIES.get(self.spec.status, b""), []
        if self.spec.fault == "garbage":
            return 200, "application/json", garbage_body(self._rng), []
        booted_s = time.monotonic() - self._boot_at
        booting = self.spec.fault == "boot" and booted_s < self.spec.boot_s
        refresh_no = 0 if self.spec.steady else int(booted_s / REFRESH_S)
        texts = reading_texts(self.spec, sensor_values(self.spec, self._boot_no, refresh_no),
                              booting)
        return 200, "application/json", answer_body(texts), texts


class NodeMcuFleet:
    """Emulated devices, each on its own loopback port."""

    def __init__(self, specs: list[DeviceSpec]) -> None:
        self.devices = {spec.name: EmulatedDevice(spec) for spec in specs}

    async def start(self) -> None:
        raise_open_file_limit()  # a listening socket and a connection per device
        await asyncio.gather(*(device.start() for device in self.devices.values()))

    async def close(self) -> None:
        await asyncio.gather(*(device.close() for device in self.devices.values()),
                             return_exceptions=True)

    def pull_devices(self, interval_s: float) -> list[PullDevice]:
        """The devices as the collector is to poll them (started: their ports are known)."""
        return [PullDevice(name, device.url, interval_s) for name, device in self.devices.items()]


class FleetThread:
    """A fleet on an event loop in a thread of its own, for code that is not async."""

    def __init__(self, specs: list[DeviceSpec]) -> None:
        self.fleet = NodeMcuFleet(specs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="nodemcu-fleet",
                                        daemon=True)

    def __enter__(self) -> NodeMcuFleet:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.fleet.start(), self._loop).result(60)
        return self.fleet

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.fleet.close(), self._loop).result(60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(60)
        self._loop.close()


def make_fleet(count: int, faults: float, seed: int, slow_delay_s: float = 0.5,
               reboot_every_s: float = 15.0) -> list[DeviceSpec]:
    """`count` devices; a share `faults` of them faulty (modes in turn), the rest varied."""
    rng = random.Random(seed)
    specs = []
    faulty = round(count * faults)
    for i in range(count):
        fault = FAULTS[i % len(FAULTS)] if i < faulty else ""
        specs.append(DeviceSpec(
            name=f"nodemcu-{i:04d}", fault=fault,
            firmware=rng.choices(list(FIRMWARES), weights=(2, 2, 6))[0],
            missing_probes=7 if rng.random() < 0.1 else 0, steady=rng.random() < 0.1,
            status=rng.choice((404, 500)), reboot_every_s=reboot_every_s,
            delay_s=slow_delay_s, seed=seed))
    return specs


def devices_tsv(devices: list[PullDevice]) -> str:
    """The collector's pull_devices_file for these devices."""
    lines = ["# name\tURL\tinterval seconds"]
    lines += [f"{d.name}\t{d.url}\t{d.interval_s:g}" for d in devices]
    return "\n".join(lines) + "\n"


# --- verification ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Checks:
    """What a run must hold to: timing limits the verifier applies."""

    refresh_s: float  # pull_refresh_seconds: no poll sooner after the previous answer
    late_limit_s: float = 1.0  # a healthy poll may start at most this long after its slot
    answer_window_s: float = 1.0  # an answer's time may be at most this long after it was sent


@dataclass
class PullReport:
    """The verdict of a run: problems found and figures to print."""

    problems: list[str] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)
    lateness_s: list[float] = field(default_factory=list)  # every healthy poll's start lateness

    @property
    def passed(self) -> bool:
        return not self.problems

    def summary(self, shown: int = 20) -> str:
        lines = [f"{name}: {value}" for name, value in self.figures.items()]
        return "\n".join(lines + verdict_lines(self.problems, self.passed, shown))


def read_pull_logs(remote_data: Path) -> dict[str, list[tuple[str, rawlog.RawLine | None]]]:
    """Every pull device's raw log lines (source, line or None when unreadable)."""
    family = remote_data / "pull"
    return {device: list(rawlog.read_lines(family / device)) for device in rawlog.devices(family)}


@dataclass
class PullTable:
    """The pull family's rows: values and receipts by source."""

    values: dict[str, list[tuple[str, str, float]]]  # source -> (ts, name, value)
    receipts: dict[str, tuple[str, int]]  # source -> (verdict, stored)


def read_pull_table(db_path: Path) -> PullTable:
    values: dict[str, list[tuple[str, str, float]]] = defaultdict(list)
    receipts: dict[str, tuple[str, int]] = {}
    if not db_path.exists():
        return PullTable(values, receipts)
    conn = connect_readonly(db_path)
    try:
        for source, ts, name, value in conn.execute(
                "SELECT source, ts, name, value FROM measurements WHERE family = 'pull'"):
            values[source].append((ts, name, value))
        for source, verdict, stored in conn.execute(
                "SELECT source, verdict, stored FROM gateway_receipts WHERE family = 'pull'"):
            receipts[source] = (verdict, stored)
    except sqlite3.OperationalError:
        pass  # no table yet: nothing stored, which the checks report
    finally:
        conn.close()
    return PullTable(values, receipts)


class _Matcher:
    """Pairs raw log lines with the answers the emulator sent, each answer at most once."""

    def __init__(self, fleet: NodeMcuFleet, window_s: float) -> None:
        self._window_us = round(window_s * 1e6)
        self._by_body: dict[tuple[str, bytes], list[SentAnswer]] = defaultdict(list)
        for name, device in fleet.devices.items():
            for answer in device.answers:
                self._by_body[name, answer.body].append(answer)
        self.used: set[int] = set()

    def match(self, device: str, line: rawlog.RawLine) -> SentAnswer | None:
        at = rawlog.ts_us(line.ts)
        fits = [a for a in self._by_body.get((device, line.payload), ())
                if 0 <= at - a.sent_us <= self._window_us and id(a) not in self.used]
        if not fits:
            return None
        answer = max(fits, key=lambda a: a.sent_us)
        self.used.add(id(answer))
        return answer


def _check_line(device: str, source: str, line: rawlog.RawLine, table: PullTable,
                matcher: _Matcher) -> list[str]:
    """What is wrong with one poll: its receipt, its answer, its stored values."""
    problems = []
    rows = table.values.get(source, [])
    receipt = table.receipts.get(source)
    if receipt is None or receipt[0] != line.verdict:
        problems.append(f"{source}: verdict {line.verdict}, receipt {receipt}")
    if line.verdict not in ("ok", "partial"):
        if rows:
            problems.append(f"{source}: {line.verdict} poll has {len(rows)} stored values")
        if line.verdict == "bad" and matcher.match(device, line) is None:
            problems.append(f"{source}: bad answer not sent by the emulator at {line.ts}")
        return problems
    answer = matcher.match(device, line)
    if answer is None:
        return problems + [f"{source}: accepted answer at {line.ts} matches none the emulator "
                           "sent (body, or its time not within the window after sending)"]
    if answer.verdict != line.verdict or line.end != str(answer.status):
        problems.append(f"{source}: verdict {line.verdict}, expected {answer.verdict}")
    names = Counter(name for _, name, _ in rows)
    if any(count > 1 for count in names.values()):
        problems.append(f"{source}: values stored more than once: {names}")
    stored = {name: value for _, name, value in rows}
    if stored != dict(answer.values):
        problems.append(f"{source}: stored {stored}, sent {dict(answer.values)}")
    if any(ts != line.ts for ts, _, _ in rows):
        problems.append(f"{source}: values stored with another time than the answer's {line.ts}")
    if receipt is not None and receipt[1] != len(answer.values):
        problems.append(f"{source}: receipt says {receipt[1]} values, {len(answer.values)} sent")
    return problems


def _check_logs(fleet: NodeMcuFleet, logs: Mapping[str, list], table: PullTable,
                checks: Checks, report: PullReport) -> Counter:
    """Every raw log line against its receipt, values and the answer sent; verdict counts."""
    matcher = _Matcher(fleet, checks.answer_window_s)
    verdicts: Counter = Counter()
    sources = set()
    for device, entries in logs.items():
        if device not in fleet.devices:
            report.problems.append(f"raw logs of a device not in the fleet: {device}")
        for source, line in entries:
            sources.add(source)
            if line is None:
                report.problems.append(f"{source}: unreadable raw log line")
                continue
            verdicts[line.verdict] += 1
            report.problems += _check_line(device, source, line, table, matcher)
    strays = set(table.values) - sources
    if strays:
        report.problems.append(f"{len(strays)} sources of stored values are no raw log line, "
                               f"e.g. {sorted(strays)[:3]}")
    return verdicts


def _check_unlogged(fleet: NodeMcuFleet, logs: Mapping[str, list], stopped_us: int,
                    window_s: float) -> list[str]:
    """Answers sent well before the stop must all be in the raw logs."""
    logged = Counter((device, line.payload) for device, entries in logs.items()
                     for _, line in entries if line is not None and line.verdict != "failed")
    problems = []
    for name, device in fleet.devices.items():
        sent = Counter(a.body for a in device.answers
                       if a.sent_us < stopped_us - window_s * 1e6)
        missing = sum(max(0, count - logged[name, body]) for body, count in sent.items())
        if missing:
            problems.append(f"{name}: {missing} answers sent but not in the raw log")
    return problems


def _check_refresh(device: EmulatedDevice, refresh_s: float) -> list[str]:
    """No request sooner than refresh_s after the previous answer was sent."""
    sent = sorted(a.sent_us for a in device.answers)
    problems = []
    for arrival in device.arrivals_us:
        before = bisect.bisect_left(sent, arrival)
        gap_us = arrival - sent[before - 1] if before else None
        if gap_us is not None and gap_us < refresh_s * 1e6 - 1000:  # 1 ms: clock reads
            problems.append(f"{device.spec.name}: polled {gap_us / 1e6:.3f} s after its "
                            f"previous answer (pull_refresh_seconds {refresh_s:g})")
    return problems


def _check_schedule(fleet: NodeMcuFleet, devices: list[PullDevice], started_us: int,
                    stopped_us: int, checks: Checks, report: PullReport) -> None:
    """Healthy devices: polled at every slot of the run (±1), none late past the limit."""
    for device in devices:
        emulated = fleet.devices[device.name]
        report.problems += _check_refresh(emulated, checks.refresh_s)
        if not emulated.spec.healthy:
            continue
        arrivals = [a for a in emulated.arrivals_us if started_us <= a <= stopped_us]
        expected = device.slot_index(stopped_us + 1) - device.slot_index(started_us)
        if abs(len(arrivals) - expected) > 1:
            report.problems.append(f"{device.name}: polled {len(arrivals)} times, its schedule "
                                   f"has {expected} slots in the run")
        lateness = [device.lateness_s(a) for a in arrivals]
        report.lateness_s += lateness
        late = [x for x in lateness if x > checks.late_limit_s]
        if late:
            report.problems.append(f"{device.name}: {len(late)} polls started more than "
                                   f"{checks.late_limit_s:g} s late (up to {max(late):.3f} s)")


def verify_pull(fleet: NodeMcuFleet, devices: list[PullDevice], base: Path, started_us: int,
                stopped_us: int, checks: Checks) -> PullReport:
    """Hold the gateway's raw logs and tables in `base` against what the fleet sent."""
    report = PullReport()
    logs = read_pull_logs(base / "remote_data")
    table = read_pull_table(base / "var" / "db.sqlite3")
    verdicts = _check_logs(fleet, logs, table, checks, report)
    report.problems += _check_unlogged(fleet, logs, stopped_us, checks.answer_window_s)
    _check_schedule(fleet, devices, started_us, stopped_us, checks, report)
    run_s = (stopped_us - started_us) / 1e6
    polls = sum(verdicts.values())
    late = report.lateness_s
    report.figures.update({
        "devices": f"{len(devices)} ({sum(d.spec.healthy for d in fleet.devices.values())} "
                   "healthy)",
        "polls": f"{polls} in {run_s:.1f} s ({polls / run_s:.1f}/s): {counts_text(verdicts)}",
        "answers sent": str(sum(len(d.answers) for d in fleet.devices.values())),
        "values stored": str(sum(len(rows) for rows in table.values.values())),
        "healthy poll start lateness": (
            f"p50 {percentile(late, 0.5) * 1000:.1f} ms, p99 {percentile(late, 0.99) * 1000:.1f}"
            f" ms, max {max(late, default=0) * 1000:.1f} ms over {len(late)} polls; "
            f"{sum(x > checks.late_limit_s for x in late)} over {checks.late_limit_s:g} s"),
    })
    return report


# --- `co2unit-server simulate-pull` ----------------------------------------------------------

@dataclass(frozen=True)
class PullRunSettings:
    """One simulate-pull run."""

    devices: int = 10
    interval_s: float = 2.0
    seconds: float = 20.0
    faults: float = 0.3
    seed: int = 1
    timeout_s: float = 1.0
    refresh_s: float = REFRESH_S
    max_backoff_s: float = 30.0
    late_limit_s: float = 1.0


def gateway_settings(devices_file: Path, run: PullRunSettings) -> dict[str, str]:
    return {"pull_devices_file": str(devices_file), "pull_timeout_seconds": f"{run.timeout_s:g}",
            "pull_refresh_seconds": f"{run.refresh_s:g}",
            "pull_max_backoff_seconds": f"{run.max_backoff_s:g}"}


@dataclass
class PullRun:
    """A finished run: the fleet and its records, the devices as polled, where, the verdict."""

    fleet: NodeMcuFleet
    devices: list[PullDevice]
    base: Path
    started_us: int
    stopped_us: int
    report: PullReport


def run_pull(base: Path, run: PullRunSettings,
             specs: list[DeviceSpec] | None = None) -> PullRun:
    """Emulate the fleet, run the real gateway process on it, stop it (SIGTERM), verify."""
    specs = specs or make_fleet(run.devices, run.faults, run.seed, run.timeout_s / 2)
    with FleetThread(specs) as fleet:
        devices = fleet.pull_devices(run.interval_s)
        devices_file = base / "devices.tsv"
        devices_file.write_text(devices_tsv(devices))
        gateway = GatewayProcess(base, gateway_settings(devices_file, run))
        gateway.start()
        try:
            started = now_us()
            time.sleep(run.seconds)
            stopped = now_us()
        finally:
            code = gateway.stop()
    report = verify_pull(fleet, devices, base, started, stopped,
                         Checks(run.refresh_s, run.late_limit_s))
    if code != 0:
        report.problems.append(f"the gateway process exited with {code} on SIGTERM")
    return PullRun(fleet, devices, base, started, stopped, report)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", type=integer(1, 10000), default=10,
                   help="emulated devices (default: 10)")
    p.add_argument("--interval", type=duration, default=2.0,
                   help="poll interval of every device, seconds (default: 2)")
    p.add_argument("--seconds", type=duration, default=20.0,
                   help="how long the gateway runs (default: 20)")
    p.add_argument("--faults", type=share, default=0.3,
                   help=f"share of faulty devices, modes in turn: {', '.join(FAULTS)} "
                   "(default: 0.3)")
    p.add_argument("--seed", type=int, default=1, help="seed of values and device kinds")
    p.add_argument("--timeout", type=duration, default=1.0,
                   help="pull_timeout_seconds (default: 1)")
    p.add_argument("--refresh", type=duration, default=REFRESH_S,
                   help="pull_refresh_seconds (default: %(default)s)")
    p.add_argument("--keep", type=Path, metavar="DIR",
                   help="run in DIR and keep it (raw logs, database, gateways.log)")


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run the emulated fleet against the gateway process, print the verdict; 1 on FAIL."""
    if args.interval < args.refresh:
        print(f"co2unit-server simulate-pull: --interval {args.interval:g} is below --refresh "
              f"{args.refresh:g}", file=sys.stderr)
        return 2
    settings = PullRunSettings(devices=args.devices, interval_s=args.interval,
                               seconds=args.seconds, faults=args.faults, seed=args.seed,
                               timeout_s=args.timeout, refresh_s=args.refresh)
    with run_dir(args.keep, "simulate-pull-") as base:
        report = run_pull(base, settings).report
        print(report.summary())
        if args.keep:
            print(f"kept in {base}")
    return 0 if report.passed else 1
