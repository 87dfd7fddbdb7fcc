"""`co2unit-server simulate-tcp`: simulated weather stations against the TCP gateway, verified.

Each station models the UltraLowPower_WeatherStation firmware (docs/gateways.md), in real time:
the gateway times records by its own clock, so a station keeps the times its header announces.
- The ATtiny sleeps measurementsEvery watchdog "seconds" of about 1.024 s, measures for about
  0.16 s and keeps the record (6 bytes: lux, SI7021 humidity and temperature codes) in a buffer
  of 58 at most, shifting the oldest out. After ceil(wake / every) records it wakes the ESP8266
  and waits up to 5 s for its `Z`.
- The ESP8266 reads the buffer, connects, writes it as one packet, closes, and sends `A` only
  when the write returned the full length. The ATtiny deletes its records on an `A` that came
  while it was waiting; otherwise the next packet carries them again, then the new ones.
Faults, as the firmware meets them: the `A` lost on I2C; a slow WiFi (the write ends after the
ATtiny's 5 s); WiFi too slow to read the buffer at all (no packet); no connection (outage);
a cut write; the ESP8266 running twice in one wake (it reset after its write); and packets in
1-byte pieces. Sensors: varying readings, steady ones (a dark, still night) or a failed SI7021
(codes 0xFFFC), so that packets equal byte for byte come wake after wake. Odd-numbered stations
start with a full buffer (they measured through an outage before the run): their packets shift
the oldest records out. Stray peers send garbage, under-9-byte, bad-length and bad-record-size
packets.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sqlite3
import struct
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..records import tcp_format
from ..records.rawlog import RawLine, read_lines, ts_us
from .common import (
    RunVerification,
    add_gateway_arguments,
    integer,
    read_db,
    receipt_sources,
    run_dir,
    share,
    until_stored,
    verdict_lines,
)

RECORD = struct.Struct("<HHH")  # lux, humidity code, temperature code (SensorData)
# Storage::addElement shifts when a record would reach the buffer's end.
BUFFER_RECORDS = (tcp_format.DEVICE_BUFFER_BYTES - 1) // RECORD.size  # 58
TYPE_1 = "tsl2561-si7021"
TYPE_1_NAMES = tcp_format.FORMATS[TYPE_1].names
FAULTS = ("lost-a", "slow-wifi", "cut", "outage", "wifi-timeout", "esp-reset", "pieces")
DELETED = ("normal", "esp-reset", "pieces")  # the wakes whose `A` reaches the ATtiny in time
NO_PACKET = ("outage", "wifi-timeout")
SENSORS = ("failed", "steady", "varying")
NOISE = ("under-9", "bad-length", "bad-record-size", "zero-interval", "garbage")
NOISE_IDS = range(250, 255)  # stray peers' "device IDs": never a station's
MAX_STATIONS = NOISE_IDS.start - 2  # and one more ID that no station has
OUTAGE_MAX_WAKES = 3
SEND_TIMEOUT_S = 10.0
GIVE_UP_S = 5.0  # the ATtiny's wait for the ESP8266 after waking it (GIVEUP_ON_MASTER_AFTER)
SLOW_S = GIVE_UP_S + 0.05  # a slow WiFi: the write ends just after the ATtiny gave up
CONNECT_FAILS_S = 1.0  # an outage: the ESP8266's connect gives up (its client timeout)
REBOOT_S = 0.3  # the ESP8266's reset and WiFi again, within the ATtiny's wait
# The SI7021 codes' resolution (its driver clears the 2 status bits) plus rounding.
TOLERANCE = {"light": 0.0, "humidity": 0.02, "temperature": 0.02}
# A failed SI7021 does not answer: the ATtiny reads 0xFF bytes, codes 0xFFFC, which read as
# these values; in the dark the light is 0.
FAILED = {"light": 0.0, "humidity": 118.992, "temperature": 128.859}
STEADY = {"light": 0.0, "humidity": 55.0, "temperature": 21.5}
# A record's time may be this far from the moment it was measured: the device has no clock,
# and the rule stamps the newest record one record interval early, after the ESP8266's up to
# GIVE_UP_S (+ 1 s) from the wake to the write; an older one is further off by the ATtiny's
# clock against measurementsEvery, up to this share of its age (the watchdog second and the
# sensor time: 18 % at every = 1 s) where the rule falls back to measurementsEvery.
TIME_SLACK_S = GIVE_UP_S + 1.0
TIME_DRIFT = 0.2


@dataclass(frozen=True)
class Record:
    """One measurement as the ATtiny stores it, the values it stands for and when it was made."""

    seq: int
    raw: bytes
    values: dict[str, float]
    measured_at: float  # the Unix time


@dataclass
class Sent:
    """One packet a station wrote: the bytes that went out and what it held."""

    kind: str  # normal or one of FAULTS
    payload: bytes
    seqs: tuple[int, ...]  # the records of the whole packet
    whole: bool  # the write returned the full length


@dataclass
class Station:
    """One weather station: its ATtiny's record buffer and everything its ESP8266 sent."""

    device_id: int
    wake_s: int
    every_s: int
    sensors: str  # one of SENSORS
    rng: random.Random
    starts_full: bool = False  # it measured through an outage before the run
    buffer: list[Record] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    records: dict[int, Record] = field(default_factory=dict)  # every one measured, by seq
    wakes: list[str] = field(default_factory=list)  # what happened at each: normal or a fault
    shifted_out: int = 0

    @property
    def device(self) -> str:
        return f"esp8266-{self.device_id}"

    @property
    def per_wake(self) -> int:
        """Records from one wake to the next (the ATtiny counts measurementsEvery seconds)."""
        return math.ceil(self.wake_s / self.every_s)

    @property
    def interval_s(self) -> float:
        """The ATtiny's real time between two records."""
        return self.every_s * tcp_format.WATCHDOG_SECOND_S + tcp_format.MEASURE_S

    def measure(self, at: float) -> None:
        """One record into the buffer, measured at the Unix time `at`."""
        if len(self.buffer) == BUFFER_RECORDS:
            self.buffer.pop(0)  # Storage::addElement shifts the oldest out
            self.shifted_out += 1
        record = self._record(len(self.records), at)
        self.records[record.seq] = record
        self.buffer.append(record)

    def fill(self) -> None:
        """A full buffer, measured up to now (the station could not reach the server)."""
        now = time.time()
        for k in range(BUFFER_RECORDS - 1, -1, -1):
            self.measure(now - k * self.interval_s)

    def _record(self, seq: int, at: float) -> Record:
        if self.sensors == "failed":
            return Record(seq, RECORD.pack(0, 0xFFFC, 0xFFFC), FAILED, at)
        values = STEADY if self.sensors == "steady" else self._varying(seq)
        return Record(seq, RECORD.pack(int(values["light"]),
                                       _code((values["humidity"] + 6) * 65536 / 125),
                                       _code((values["temperature"] + 46.85) * 65536 / 175.72)),
                      values, at)

    def _varying(self, seq: int) -> dict[str, float]:
        day = 2 * math.pi * (seq * self.every_s % 86400) / 86400
        return {"light": float(max(0, int(20000 * math.sin(day) + self.rng.gauss(0, 50)))),
                "humidity": 60 - 15 * math.sin(day) + self.rng.gauss(0, 0.3),
                "temperature": 12 + 6 * math.sin(day) + self.rng.gauss(0, 0.05)}

    def packet(self) -> bytes:
        records = b"".join(r.raw for r in self.buffer)
        header = tcp_format.HEADER.pack(len(records), self.wake_s, self.every_s, RECORD.size,
                                        self.device_id, 3)
        return header + records

    def record_sent(self, kind: str, payload: bytes, whole: bool) -> None:
        self.sent.append(Sent(kind, payload, tuple(r.seq for r in self.buffer), whole))


def _code(value: float) -> int:
    """A 16-bit SI7021 code with its two status bits cleared, as the ATtiny stores it."""
    return min(0xFFFF, max(0, round(value))) & 0xFFFC


def make_plan(rng: random.Random, wakes: int, faults: float, first: int = 0) -> list[str]:
    """What happens at each wake: normal or a fault (an outage lasts 1-3 wakes). The faults
    take turns, from FAULTS[first], so that a short run has every kind."""
    plan: list[str] = []
    turn = first
    while len(plan) < wakes:
        kind = "normal"
        if rng.random() < faults:
            kind, turn = FAULTS[turn % len(FAULTS)], turn + 1
        streak = rng.randint(1, OUTAGE_MAX_WAKES) if kind == "outage" else 1
        plan += [kind] * streak
    return plan[:wakes]


def noise_packet(rng: random.Random, kind: str) -> bytes:
    """A stray peer's packet that no gateway may take for valid."""
    device_id = rng.choice(NOISE_IDS)
    records = rng.randint(1, 10)
    if kind == "under-9":  # 8 bytes name a device: a stray one
        return (rng.randbytes(7) + bytes([device_id]))[:rng.randint(0, 8)]
    if kind == "bad-length":  # more or fewer bytes than bytesReady announces
        body = rng.randbytes(6 * records + rng.choice((-5, -1, 1, 7)))
        return tcp_format.HEADER.pack(6 * records, 3600, 120, 6, device_id, 3) + body
    if kind == "bad-record-size":
        return tcp_format.HEADER.pack(7, 3600, 120, 6, device_id, 3) + rng.randbytes(7)
    if kind == "zero-interval":
        return tcp_format.HEADER.pack(6, 0, 120, 6, device_id, 3) + rng.randbytes(6)
    body = rng.randbytes(rng.randint(1, 200))  # garbage: bytesReady never matches
    return struct.pack("<H", len(body) + 1) + rng.randbytes(5) + bytes([device_id]) + b"\0" + body


async def send(host: str, port: int, data: bytes, pieces: bool = False) -> None:
    """Connect, write, close; then wait for the server's close (it sends nothing)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port),
                                            SEND_TIMEOUT_S)
    try:
        if pieces:
            for i in range(len(data)):
                writer.write(data[i:i + 1])
                await writer.drain()
                await asyncio.sleep(0.001)
        else:
            writer.write(data)
        await writer.drain()
        writer.write_eof()
        # The server closes once it has the packet: so the next one of this station is
        # surely later in its raw log. A real device just closes and sleeps.
        await asyncio.wait_for(reader.read(), SEND_TIMEOUT_S)
    finally:
        writer.close()


@dataclass
class SimConfig:
    """Everything a `simulate-tcp` run can be told."""

    host: str = "127.0.0.1"
    port: int | None = None  # None: a gateway of our own, in a temp dir
    remote_data: Path | None = None
    var_dir: Path | None = None
    devices: int = 5
    unknown: int = 1  # the last stations' IDs are not in tcp_device_types
    packets: int = 6  # wakes per station
    faults: float = 0.4
    seed: int = 1
    wake_s: int = 10
    every_s: int = 1
    workdir: Path | None = None


async def wake(cfg: SimConfig, station: Station, kind: str) -> float:
    """The ESP8266's wake: what it sends, and whether the ATtiny deletes. Returns the seconds
    the ATtiny waited for it (its `Z`, or GIVE_UP_S)."""
    loop = asyncio.get_running_loop()
    woken = loop.time()
    station.wakes.append(kind)
    if kind in NO_PACKET:
        return CONNECT_FAILS_S if kind == "outage" else GIVE_UP_S
    packet = station.packet()
    if kind == "slow-wifi":
        await asyncio.sleep(SLOW_S)
    whole = kind != "cut"
    payload = packet if whole else packet[:station.rng.randint(1, len(packet) - 1)]
    await send(cfg.host, cfg.port, payload, pieces=kind == "pieces")
    station.record_sent(kind, payload, whole)
    if kind == "esp-reset":  # it reset before its `A`, ran again and wrote the same buffer
        await asyncio.sleep(REBOOT_S)
        await send(cfg.host, cfg.port, packet)
        station.record_sent(kind, packet, True)
    if kind in DELETED:
        station.buffer.clear()
    return min(GIVE_UP_S, loop.time() - woken)


async def run_station(cfg: SimConfig, station: Station, plan: list[str], start: float) -> None:
    """The station's wakes, at the ATtiny's pace from `start` (the event loop's clock)."""
    loop = asyncio.get_running_loop()
    at = start
    await asyncio.sleep(max(0.0, at - loop.time()))
    if station.starts_full:
        station.fill()
    for kind in plan:
        for _ in range(station.per_wake):
            at += station.interval_s
            await asyncio.sleep(max(0.0, at - loop.time()))
            station.measure(time.time())
        at += await wake(cfg, station, kind)  # the ATtiny sleeps again once it stops waiting


async def run_noise(cfg: SimConfig, rng: random.Random, count: int, start: float,
                    duration: float) -> list[tuple[str, bytes]]:
    """Stray packets spread over the run."""
    loop = asyncio.get_running_loop()
    sent = []
    for when in sorted(rng.uniform(0, duration) for _ in range(count)):
        await asyncio.sleep(max(0.0, start + when - loop.time()))
        kind = rng.choice(NOISE)
        payload = noise_packet(rng, kind)
        await send(cfg.host, cfg.port, payload)
        sent.append((kind, payload))
    return sent


def make_stations(cfg: SimConfig) -> list[Station]:
    return [Station(i, cfg.wake_s, cfg.every_s, SENSORS[(i - 1) % len(SENSORS)],
                    random.Random(f"{cfg.seed}:{i}"), starts_full=i % 2 == 1)
            for i in range(1, cfg.devices + 1)]


def station_plan(cfg: SimConfig, station: Station) -> list[str]:
    """Its wakes; a station that starts full loses its first `A`, so that its next packet is
    the full buffer again, shifted."""
    # Stations start their turns apart, so that a few wakes each make every kind.
    plan = make_plan(station.rng, cfg.packets, cfg.faults, 2 * (station.device_id - 1))
    return ["lost-a", *plan[1:]] if station.starts_full else plan


async def simulate(cfg: SimConfig, stations: list[Station]) -> list[tuple[str, bytes]]:
    """Run every station's wakes and the stray peers; return the stray packets sent."""
    rng = random.Random(cfg.seed)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    tasks = [run_station(cfg, s, station_plan(cfg, s), start + rng.uniform(0, 1))
             for s in stations]
    noise_count = round(cfg.faults * cfg.packets * len(stations))
    duration = cfg.packets * stations[0].per_wake * stations[0].interval_s
    *_, noise = await asyncio.gather(*tasks, run_noise(cfg, rng, noise_count, start, duration))
    return noise


@dataclass
class Verification(RunVerification):
    """What the raw logs and the table say about a run of stations."""

    bad_lines: int = 0
    unknown_lines: int = 0
    accepted_records: int = 0  # in packets written whole that the gateway took
    resent_records: int = 0  # carried again and recognised as such
    shifted_resends: int = 0  # resends of a full buffer whose oldest records were shifted out
    equal_packets: int = 0  # equal, byte for byte, to the previous packet a wake or more later
    largest_time_error_s: float = 0.0


def table_rows(conn: sqlite3.Connection, device: str) -> dict[str, dict[tuple[str, str], float]]:
    """A device's measurements: by source, then by (ts, name)."""
    rows: dict[str, dict[tuple[str, str], float]] = {}
    for source, ts, name, value in conn.execute(
            "SELECT source, ts, name, value FROM measurements WHERE device = ?", (device,)):
        rows.setdefault(source, {})[ts, name] = value
    return rows


class StationCheck:
    """Replays one station's raw log with tcp_format and holds the table against it."""

    def __init__(self, station: Station, registry: dict[int, tcp_format.RecordFormat],
                 known: bool | None, result: Verification) -> None:
        self.station = station
        self.registry = registry
        # Only a gateway of our own tells whether the ID is in its tcp_device_types.
        self.expected_verdict = None if known is None else "ok" if known else "unknown"
        self.result = result
        self.stored: dict[int, str] = {}  # record seq -> the line that stored it
        self.accepted: set[int] = set()  # records in packets written whole, the gateway took

    def problem(self, text: str) -> None:
        self.result.problems.append(f"{self.station.device}: {text}")

    def run(self, lines: list[tuple[str, RawLine | None]],
            rows: dict[str, dict[tuple[str, str], float]], receipts: set[str]) -> None:
        sent = [s for s in self.station.sent
                if tcp_format.device_name(s.payload) == self.station.device]
        earlier = len(lines) - len(sent)  # a long-lived gateway's log has older lines first
        if earlier < 0 or [line and line.payload for _, line in lines[earlier:]] != \
                [s.payload for s in sent]:
            self.problem(f"its raw log does not end with the {len(sent)} packets it sent")
            return
        history = None
        for _, line in lines[:earlier]:
            if line is not None:
                history = tcp_format.interpret(line, self.station.device, "", history,
                                               self.registry)[2]
        for (source, line), packet in zip(lines[earlier:], sent, strict=True):
            assert line is not None  # its payload matched
            self.result.lines += 1
            if source not in receipts:
                self.problem(f"{source} has no gateway receipt")
            history = self.line(source, line, packet, history, rows.get(source, {}))
        self.result.accepted_records += len(self.accepted)
        lost = self.accepted - self.stored.keys()
        if lost:
            self.problem(f"{len(lost)} records sent and accepted are not in the table "
                         f"(first: record {min(lost)})")

    def line(self, source: str, line: RawLine, packet: Sent,
             history: tcp_format.History | None,
             found: dict[tuple[str, str], float]) -> tcp_format.History | None:
        """Check one packet's line and rows; the device's history after it."""
        try:
            decoded = tcp_format.decode_received(line.payload, line.end, ts_us(line.ts),
                                                 history, self.registry)
        except tcp_format.PacketError as exc:
            self.result.bad_lines += 1
            if packet.whole or line.verdict != "bad" or found:
                self.problem(f"{source} ({packet.kind}) is {line.verdict} with {len(found)} "
                             f"values: {exc}")
            return history
        if line.verdict != (self.expected_verdict or line.verdict) or line.verdict == "bad":
            self.problem(f"{source} is {line.verdict}, expected {self.expected_verdict or 'ok'}")
        new = packet.seqs[len(packet.seqs) - len(decoded.new):]
        if line.verdict == "unknown":
            self.result.unknown_lines += 1
            if found:
                self.problem(f"{source}: an unknown device ID's packet has values")
            return decoded.history
        self.count_resend(history, decoded, new, packet)
        self.accepted.update(packet.seqs)
        for seq in new:
            if seq in self.stored:
                self.problem(f"record {seq} stored twice: {self.stored[seq]} and {source}")
            self.stored[seq] = source
        self.rows(source, decoded, new, found)
        return decoded.history

    def count_resend(self, history: tcp_format.History | None, decoded: tcp_format.Decoded,
                     new: tuple[int, ...], packet: Sent) -> None:
        repeated = len(packet.seqs) - len(new)
        self.result.resent_records += repeated
        if history is None:
            return
        if 0 < repeated < len(history.records):
            self.result.shifted_resends += 1
        if new and decoded.history.records == history.records:
            self.result.equal_packets += 1

    def rows(self, source: str, decoded: tcp_format.Decoded, new: tuple[int, ...],
             found: dict[tuple[str, str], float]) -> None:
        """The line's rows: the times the rule gives, the values the station measured."""
        expected = {(ts, name): value for ts, name, value in decoded.values}
        self.result.rows_expected += len(expected)
        self.result.rows_found += len(found)
        if found.keys() != expected.keys():
            self.problem(f"{source}: {len(found)} rows, expected {len(expected)} at the times "
                         "the logged receive times give")
            return
        per_record = len(TYPE_1_NAMES)
        received_s = decoded.history.received_us / 1e6
        for i, (ts, name, value) in enumerate(decoded.values):
            record = self.station.records[new[i // per_record]]
            measured = record.values[name]
            if found[ts, name] != value or abs(value - measured) > TOLERANCE[name]:
                self.problem(f"{source}: {name} at {ts} is {found[ts, name]}, "
                             f"measured {measured:.3f}")
                return
            if not self.on_time(source, ts_us(ts) / 1e6, record, received_s):
                return

    def on_time(self, source: str, stamped: float, record: Record, received: float) -> bool:
        """Whether a record's time is within what the rule can know (TIME_SLACK_S...)."""
        error = abs(stamped - record.measured_at)
        self.result.largest_time_error_s = max(self.result.largest_time_error_s, error)
        allowed = self.station.interval_s + TIME_SLACK_S + \
            TIME_DRIFT * (received - record.measured_at)
        if error > allowed:
            self.problem(f"{source}: record {record.seq} is stamped {error:.1f} s from when "
                         f"it was measured (allowed {allowed:.1f} s)")
        return error <= allowed


def verify(stations: list[Station], noise: list[tuple[str, bytes]], remote_data: Path,
           db_path: Path, known_ids: set[int] | None) -> Verification:
    """Hold the raw logs and the table against what the stations and stray peers sent."""
    family = remote_data / tcp_format.FAMILY
    result = Verification()

    def check(conn: sqlite3.Connection) -> None:
        _check_stations(conn, stations, family, known_ids, result)
        _check_strays(conn, stations, noise, family, known_ids is not None, result)

    read_db(db_path, result.problems, check)
    return result


def _check_stations(conn: sqlite3.Connection, stations: list[Station], family: Path,
                   known_ids: set[int] | None, result: Verification) -> None:
    """Every station's raw log and rows; `known_ids`: our own gateway's tcp_device_types."""
    registry = {s.device_id: tcp_format.FORMATS[TYPE_1] for s in stations}
    for station in stations:
        known = None if known_ids is None else station.device_id in known_ids
        StationCheck(station, registry, known, result).run(
            list(read_lines(family / station.device)), table_rows(conn, station.device),
            receipt_sources(conn, station.device))


def _check_strays(conn: sqlite3.Connection, stations: list[Station],
                 noise: list[tuple[str, bytes]], family: Path, fresh: bool,
                 result: Verification) -> None:
    """Every stray packet refused as bad, and (a `fresh` gateway) each one in a raw log."""
    stray_devices = [f"esp8266-{i}" for i in NOISE_IDS] + [tcp_format.UNIDENTIFIED]
    logged = 0
    for device in stray_devices:
        lines = list(read_lines(family / device))
        logged += len(lines)
        result.lines += len(lines)
        result.bad_lines += sum(line is not None and line.verdict == "bad" for _, line in lines)
        if any(line is None or line.verdict != "bad" for _, line in lines) or \
                table_rows(conn, device):
            result.problems.append(f"{device}: a stray packet was not refused as bad")
    if fresh:  # every stray packet is in a log
        strays = sum(1 for _, p in noise if p) + sum(
            1 for s in stations for p in s.sent
            if tcp_format.device_name(p.payload) == tcp_format.UNIDENTIFIED)
        if strays != logged:
            result.problems.append(f"{strays} stray packets sent, {logged} in the raw logs")


@dataclass
class RunResult:
    stations: list[Station]
    noise: list[tuple[str, bytes]]
    wall_s: float
    verification: Verification | None

    @property
    def passed(self) -> bool:
        return self.verification is not None and not self.verification.problems

    def summary(self) -> str:
        wakes = [kind for s in self.stations for kind in s.wakes]
        kinds = ", ".join(f"{k} {wakes.count(k)}" for k in ("normal", *FAULTS))
        sensors = ", ".join(f"{k} {sum(s.sensors == k for s in self.stations)}" for k in SENSORS)
        lines = [
            f"stations {len(self.stations)} ({sensors})  wakes {len(wakes)} ({kinds})  "
            f"connections {sum(len(s.sent) for s in self.stations)}",
            f"records measured {sum(len(s.records) for s in self.stations)}  shifted out "
            f"{sum(s.shifted_out for s in self.stations)}  still buffered "
            f"{sum(len(s.buffer) for s in self.stations)}  stray packets {len(self.noise)}  "
            f"wall time {self.wall_s:.1f} s",
        ]
        v = self.verification
        if v is None:
            lines.append("UNVERIFIED (give --remote-data and --var-dir with --port)")
            return "\n".join(lines)
        lines.append(f"raw log lines {v.lines} (bad {v.bad_lines}, unknown {v.unknown_lines})  "
                     f"records delivered whole and accepted {v.accepted_records}  resent "
                     f"records recognised {v.resent_records} (full-buffer resends "
                     f"{v.shifted_resends})  equal packets stored {v.equal_packets}  rows "
                     f"{v.rows_found}/{v.rows_expected}  largest time error "
                     f"{v.largest_time_error_s:.1f} s")
        return "\n".join(lines + verdict_lines(v.problems, self.passed))


def run_stations(cfg: SimConfig) -> RunResult:
    """Run the stations against cfg.host:cfg.port (not verified yet)."""
    stations = make_stations(cfg)
    started = time.monotonic()
    noise = asyncio.run(simulate(cfg, stations))
    return RunResult(stations, noise, time.monotonic() - started, None)


def run_against(cfg: SimConfig) -> RunResult:
    """Run against a gateway already running; verify when its data dirs are given."""
    result = run_stations(cfg)
    if cfg.remote_data is not None and cfg.var_dir is not None:
        remote_data, db_path = cfg.remote_data, cfg.var_dir / "db.sqlite3"
        result.verification = until_stored(
            lambda: verify(result.stations, result.noise, remote_data, db_path, None))
    return result


def run_own_gateway(cfg: SimConfig) -> RunResult:
    """Start a gateway in a temp dir (or cfg.workdir), run against it, stop it, verify."""
    from .launcher import GatewayProcess

    known = set(range(1, cfg.devices - cfg.unknown + 1))
    # An empty setting means its default (ID 1): with every station unknown, name an ID none has.
    types = ",".join(f"{i}={TYPE_1}" for i in sorted(known)) or f"{MAX_STATIONS + 1}={TYPE_1}"
    with run_dir(cfg.workdir, "simulate-tcp-") as base:
        gateway = GatewayProcess(base, {"tcp_device_types": types}, tcp=True).start()
        try:
            result = run_stations(replace(cfg, port=gateway.tcp_port))
            if gateway.stop() != 0:  # a clean stop stores everything it received
                print(gateway.log_text()[-3000:], file=sys.stderr)
            result.verification = verify(result.stations, result.noise, gateway.remote_data,
                                         gateway.var_dir / "db.sqlite3", known)
            return result
        finally:
            gateway.kill()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", type=integer(1, MAX_STATIONS), default=5,
                   help="stations, device IDs 1..N (default: %(default)s)")
    p.add_argument("--unknown", type=integer(0, MAX_STATIONS), default=1,
                   help="how many of them (the last IDs) are not in the gateway's "
                   "tcp_device_types (own gateway only; default: %(default)s)")
    p.add_argument("--packets", type=integer(1, 100000), default=6,
                   help="wakes per station (default: %(default)s)")
    p.add_argument("--faults", type=share, default=0.4,
                   help="share of wakes with a fault, and stray packets per wake "
                   "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="seed of data and faults")
    p.add_argument("--wake", type=integer(1, 65535), default=10,
                   help="expectedWakeupTime in the headers, s; the stations run in real "
                   "time, a wake every ceil(wake / every) * (every * 1.024 + 0.16) s "
                   "(default: %(default)s)")
    p.add_argument("--every", type=integer(1, 65535), default=1,
                   help="measurementsEvery in the headers, s (default: %(default)s)")
    add_gateway_arguments(p, "TCP")
    p.add_argument("--workdir", type=Path,
                   help="without --port: where the own gateway keeps its data (kept)")


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run the stations, print the summary; exit status 1 on FAIL."""
    if args.unknown > args.devices:
        print("co2unit-server simulate-tcp: --unknown exceeds --devices", file=sys.stderr)
        return 2
    cfg = SimConfig(host=args.host, port=args.port, remote_data=args.remote_data,
                    var_dir=args.var_dir, devices=args.devices, unknown=args.unknown,
                    packets=args.packets, faults=args.faults, seed=args.seed,
                    wake_s=args.wake, every_s=args.every,
                    workdir=args.workdir)
    try:
        result = run_own_gateway(cfg) if cfg.port is None else run_against(cfg)
    except (OSError, TimeoutError) as exc:  # the gateway is not there, or went away
        print(f"co2unit-server simulate-tcp: {exc!r}\nFAIL", file=sys.stderr)
        return 1
    print(result.summary())
    return 0 if result.passed or result.verification is None else 1
