"""The ESP8266 weather stations' binary packets (docs/gateways.md): check, split, time, parse.

Pure functions of a packet, its receive time and the device's previous valid packet: the
gateway and the importer both decode with them, so a rebuild from the raw logs gives the
same rows as the live gateway stored.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..core.config import device_type_names
from ..database.rows import Measurement, Receipt
from .rawlog import RawLine, log_files, read_lines_of, ts_texts, ts_us

FAMILY = "tcp"
# bytesReady, expectedWakeupTime, measurementsEvery (uint16 LE), bytesPerMeasurement,
# deviceID, sensorCount (uint8): the firmware's SlaveStats, sent without its padding byte.
HEADER = struct.Struct("<HHHBBB")
# The ATtiny's record buffer (Storage.h STORAGE_SIZE): when a record no longer fits, the
# oldest is shifted out, so a packet this full may have lost its oldest records.
DEVICE_BUFFER_BYTES = 350
UNIDENTIFIED = "esp8266-unidentified"  # packets too short to carry a device ID
# The rules a packet is read by; a new value makes the importer read the TCP raw logs again
# once (2: a resend decided from the firmware's counts and time, not from equal bytes).
RULES = "2"


class PacketError(ValueError):
    """A packet that is kept raw but cannot be parsed; the message says why."""


@dataclass(frozen=True)
class Header:
    bytes_ready: int
    wake_s: int  # expectedWakeupTime
    every_s: int  # measurementsEvery
    record_bytes: int  # bytesPerMeasurement
    device_id: int
    sensor_count: int


@dataclass(frozen=True)
class RecordFormat:
    """How one device type's records read: their size, value names and decoder (of a block
    of whole records at once: the values of each record, a tuple in the order of `names`)."""

    name: str
    record_bytes: int
    names: tuple[str, ...]
    decode: Callable[[bytes], list[tuple[float, ...]]]


_TSL2561_SI7021 = struct.Struct("<HHH")


def _tsl2561_si7021(block: bytes) -> list[tuple[float, float, float]]:
    # The SI7021 datasheet's conversions, as the devices' own server applies them.
    return [(float(lux), 125.0 * humidity_code / 65536 - 6,
             175.72 * temperature_code / 65536 - 46.85)
            for lux, humidity_code, temperature_code in _TSL2561_SI7021.iter_unpack(block)]


FORMATS = {f.name: f for f in (
    RecordFormat("tsl2561-si7021", 6, ("light", "humidity", "temperature"), _tsl2561_si7021),
)}


def parse_device_types(entries: Iterable[str]) -> dict[int, RecordFormat]:
    """The registry from the `tcp_device_types` setting ('1=tsl2561-si7021', ...)."""
    return {device_id: FORMATS[name] for device_id, name in device_type_names(entries).items()}


def device_name(packet: bytes) -> str:
    """`esp8266-<deviceID>`, or UNIDENTIFIED when the packet is too short to say."""
    return f"esp8266-{packet[7]}" if len(packet) >= 8 else UNIDENTIFIED


def check(packet: bytes, registry: dict[int, RecordFormat]) -> Header:
    """The packet's header when its length and record size add up; PacketError otherwise."""
    if len(packet) < HEADER.size:
        raise PacketError(f"{len(packet)} bytes: shorter than the {HEADER.size}-byte header")
    header = Header(*HEADER.unpack_from(packet))
    if len(packet) != HEADER.size + header.bytes_ready:
        raise PacketError(f"{len(packet)} bytes, but the header announces "
                          f"{HEADER.size} + bytesReady {header.bytes_ready}")
    if header.record_bytes == 0:
        raise PacketError("bytesPerMeasurement is 0")
    if header.bytes_ready % header.record_bytes:
        raise PacketError(f"bytesReady {header.bytes_ready} is not a whole number of "
                          f"{header.record_bytes}-byte records")
    if header.wake_s == 0 or header.every_s == 0:
        raise PacketError("expectedWakeupTime or measurementsEvery is 0")
    known = registry.get(header.device_id)
    if known is not None and known.record_bytes != header.record_bytes:
        raise PacketError(f"{header.record_bytes}-byte records, but device type "
                          f"{header.device_id} ({known.name}) has {known.record_bytes}")
    return header


@dataclass(frozen=True)
class History:
    """What a device's previous valid packet tells about its next one."""

    received_us: int
    records: tuple[bytes, ...]


# The ATtiny's clock (AtTiny85.ino, Power.cpp): it sleeps measurementsEvery watchdog periods
# of about 1.024 s, then measures for about 0.16 s; it wakes the ESP8266 after the
# measurement that brings its count of slept seconds to expectedWakeupTime.
WATCHDOG_SECOND_S = 1.024
MEASURE_S = 0.16


def records_per_wake(header: Header) -> int:
    """How many records the ATtiny measures from one wake of the ESP8266 to the next."""
    return -(-header.wake_s // header.every_s)


def wake_period_us(header: Header) -> int:
    """The ATtiny's time from one wake of the ESP8266 to the next (without the seconds the
    ESP8266 takes, at most the ATtiny's 5 s wait for its `Z`)."""
    interval_s = header.every_s * WATCHDOG_SECOND_S + MEASURE_S
    return round(records_per_wake(header) * interval_s * 1_000_000)


def wakes_since(header: Header, received_us: int, history: History | None) -> int | None:
    """How many wakes of the device lie between its previous packet and this one: the time
    between them in wake periods, rounded; None without a previous packet or when the
    server's clock went back."""
    if history is None or received_us < history.received_us:
        return None
    period = wake_period_us(header)
    return (received_us - history.received_us + period // 2) // period


def repeated_records(previous: Sequence[bytes], records: Sequence[bytes], per_wake: int,
                     wakes: int | None, full: bool) -> int:
    """How many leading records of a packet the device's previous packet already carried.

    The ATtiny deletes its records only on the ESP8266's `A` (sent after a full write, lost
    when the I2C command fails or comes after the ATtiny's 5 s wait); then the next packet
    carries them again, followed by the `per_wake` records of each of the `wakes` wakes since,
    the oldest shifted out when the buffer is `full`. So only the records beyond
    per_wake * wakes can be old, and they are the previous packet's last ones: all of it, or
    (full) fewer. Equal bytes alone prove nothing: a dark night or a failed SI7021 (codes
    0xFFFC) gives equal records wake after wake, and a packet equal to the previous one a wake
    later is new. Within the same wake (no measurement since) only the very same packet can
    come again: the ESP8266 ran twice before the ATtiny deleted.
    """
    n = len(previous)
    if wakes is None or not n:
        return 0
    if wakes == 0:
        return n if tuple(records) == tuple(previous) else 0
    old = len(records) - per_wake * wakes
    if old <= 0 or old > n or (old < n and not full):
        return 0
    return old if tuple(records[:old]) == tuple(previous[n - old:]) else 0


def record_interval_us(header: Header, received_us: int, history: History | None,
                       new_records: int) -> int:
    """The time between records: spread over the time since the previous packet when that
    is within a third of expectedWakeupTime of it, else measurementsEvery (as the devices'
    own server does)."""
    wake_us = header.wake_s * 1_000_000
    if history is not None and new_records:
        since = received_us - history.received_us
        if abs(wake_us - since) < wake_us / 3:
            return since // new_records
    return header.every_s * 1_000_000


@dataclass(frozen=True)
class Decoded:
    """A valid packet: its verdict, its new records (timed and parsed when asked: the gateway
    keeps a packet before it parses it) and the device's new history."""

    header: Header
    verdict: str  # ok | unknown
    detail: str
    history: History
    new: tuple[bytes, ...]  # the records not repeated from the previous packet, oldest first
    step_us: int  # between records; the newest is one step before the receive time
    fmt: RecordFormat | None  # None: unknown device type, no values

    @property
    def stored(self) -> int:
        """How many values the packet gives."""
        return len(self.new) * len(self.fmt.names) if self.fmt else 0

    def rows(self, device: str, source: str) -> list[tuple]:
        """The new records' values as rows of `measurements` (plain tuples of Measurement's
        fields: a third of the cost), oldest first, a record's in the order of its names."""
        if self.fmt is None:
            return []
        n, names = len(self.new), self.fmt.names
        times = ts_texts(self.history.received_us - n * self.step_us, self.step_us, n)
        return [(device, FAMILY, ts, name, value, source, None)
                for ts, values in zip(times, self.fmt.decode(b"".join(self.new)), strict=True)
                for name, value in zip(names, values, strict=True)]

    def measurements(self, device: str, source: str) -> list[Measurement]:
        return list(map(Measurement._make, self.rows(device, source)))

    @property
    def values(self) -> tuple[tuple[str, str, float], ...]:
        """(ts, name, value) of each of rows()."""
        return tuple((ts, name, value) for _, _, ts, name, value, _, _ in self.rows("", ""))

    def receipt(self, device: str, ts: str, source: str) -> Receipt:
        return Receipt(source, device, FAMILY, ts, self.verdict, self.stored,
                       float(self.header.wake_s), self.detail)


def decode(packet: bytes, received_us: int, history: History | None,
           registry: dict[int, RecordFormat]) -> Decoded:
    """Check, split, de-duplicate and time a packet; PacketError when it is bad."""
    header = check(packet, registry)
    size = header.record_bytes
    records = tuple(packet[i:i + size] for i in range(HEADER.size, len(packet), size))
    full = header.bytes_ready + size >= DEVICE_BUFFER_BYTES
    wakes = wakes_since(header, received_us, history)
    repeated = repeated_records(history.records if history else (), records,
                                records_per_wake(header), wakes, full)
    new = records[repeated:]
    step = record_interval_us(header, received_us, history, len(new))
    notes = [_resent_note(repeated, wakes)] if repeated else []
    fmt = registry.get(header.device_id)
    if fmt is None:
        notes.append(f"no record format for deviceID {header.device_id} (tcp_device_types)")
    return Decoded(header, "ok" if fmt else "unknown", "; ".join(notes),
                   History(received_us, records), new, step, fmt)


def _resent_note(repeated: int, wakes: int | None) -> str:
    if wakes == 0:
        return (f"sent again in the same wake: its {repeated} records repeat the previous "
                "packet")
    return (f"resent: its first {repeated} records repeat the previous packet "
            f"({wakes} wake{'s' if wakes != 1 else ''} since it)")


# How a read can end (the raw log's `end`). Only the device's close (eof) surely ends a
# packet; a whole one (as long as its header says) that ended otherwise is still taken: its
# FIN may be lost while the device, its write done, deleted the records and went to sleep.
END_EOF = "eof"
END_TOO_LARGE = "too-large"  # cut at tcp_max_packet_bytes: never whole, whatever it says
END_REASONS = {"timeout": "the device did not close the connection in time",
               "reset": "the connection was reset",
               END_TOO_LARGE: "longer than tcp_max_packet_bytes, cut there"}


def decode_received(packet: bytes, end: str, received_us: int, history: History | None,
                    registry: dict[int, RecordFormat]) -> Decoded:
    """decode() of a packet as its read ended (the gateway and the importer must agree)."""
    if end == END_EOF:
        return decode(packet, received_us, history, registry)
    reason = END_REASONS.get(end, f"read ended by {end!r}")
    if end == END_TOO_LARGE:
        raise PacketError(reason)
    try:
        decoded = decode(packet, received_us, history, registry)
    except PacketError as exc:
        raise PacketError(f"{reason}; {exc}") from None
    detail = "; ".join(filter(None, (f"{reason}, but the packet is whole", decoded.detail)))
    return replace(decoded, detail=detail)


def bad_receipt(device: str, ts: str, source: str, error: PacketError) -> Receipt:
    """The receipt of a packet kept raw because it is bad."""
    return Receipt(source, device, FAMILY, ts, "bad", 0, None, str(error))


def interpret(line: RawLine, device: str, source: str, history: History | None,
              registry: dict[int, RecordFormat]) -> tuple[Receipt, list[Measurement],
                                                          History | None]:
    """A raw log line's receipt, values and the device's history after it (for the importer)."""
    try:
        decoded = decode_received(line.payload, line.end, ts_us(line.ts), history, registry)
    except PacketError as exc:
        return bad_receipt(device, line.ts, source, exc), [], history
    return (decoded.receipt(device, line.ts, source), decoded.measurements(device, source),
            decoded.history)


def history_from_log(device_dir: Path, registry: dict[int, RecordFormat]) -> History | None:
    """The device's history as its raw log leaves it: from its last valid packet, if any."""
    for path in reversed(log_files(device_dir)):
        last = None
        for _source, line in read_lines_of(path):
            if line is not None and line.verdict in ("ok", "unknown"):
                last = line
        if last is not None:
            try:
                header = check(last.payload, registry)
            except PacketError:
                continue
            size = header.record_bytes
            records = tuple(last.payload[i:i + size]
                            for i in range(HEADER.size, len(last.payload), size))
            return History(ts_us(last.ts), records)
    return None
