"""The pull family's formats (docs/gateways.md): the devices file and the NodeMCU answers.

The devices file (pull_devices_file) is a TSV of name, URL and interval seconds, `#` comments.
`co2unit-server serve` and the collector read it strictly (the collector again whenever it
changes, DevicesFileWatch), the fleet pages tolerantly; this module has no aiohttp, so the pages
and the simulator can read it without the collector's libraries.

An answer `{"nodemcu": {"mq135": {"co2": "402.08", ...}, "bmp180": {...}, ...}}` gives
`mq135.co2`, `bmp180.pressure`, ...: same-named values of different sensors stay apart, never
averaged. Values are strings with two decimals; `""` (booting), `nan`, `inf`, `ovf` are unusable.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..core.config import ConfigError
from ..database.rows import Measurement, Receipt
from .rawlog import RawLine

log = logging.getLogger(__name__)

FAMILY = "pull"
NAME_RE = re.compile(r"[A-Za-z0-9._-]+")
_US = 1_000_000
# The DS18B20 reads -55..125 °C; the firmware averages 8 slots and a missing probe reads
# -127, so a mean below the range has a missing probe in it and is no temperature.
_LOWEST = {"ds18b20.temperature": -55.0}
# Before its first sensor read the firmware answers "" for every String value, but the DS18B20
# mean comes from a zero-initialised float array: a "0.00" beside any "" is no reading.
_PROBE_MEAN = "ds18b20.temperature"


class AnswerError(ValueError):
    """An answer that is kept raw but gives no value; the message says why."""


@dataclass(frozen=True)
class Answer:
    """The usable values of an answer (name, value) and what was wrong with the others."""

    values: tuple[tuple[str, float], ...]
    problems: tuple[str, ...]

    @property
    def verdict(self) -> str:
        return "partial" if self.problems else "ok"

    @property
    def detail(self) -> str:
        return "; ".join(self.problems)

    def measurements(self, device: str, ts: str, source: str) -> list[Measurement]:
        return [Measurement(device, FAMILY, ts, name, value, source)
                for name, value in self.values]

    def receipt(self, device: str, ts: str, source: str) -> Receipt:
        return Receipt(source, device, FAMILY, ts, self.verdict, len(self.values), None,
                       self.detail)


def _value(name: str, raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ValueError(f"{name} is {type(raw).__name__}, not a number")
    if raw == "":
        raise ValueError(f"{name} is empty (booting)")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} is {raw!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} is {raw!r}")
    if value < _LOWEST.get(name, -math.inf):
        raise ValueError(f"{name} is {raw}: below the sensor's range (a missing probe)")
    return value


def parse_answer(status: int, body: bytes) -> Answer:
    """The values of a 200 JSON answer; AnswerError when it gives none."""
    if status != 200:
        raise AnswerError(f"HTTP {status}")
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise AnswerError(f"not JSON: {exc}") from None
    sensors = document.get("nodemcu") if isinstance(document, dict) else None
    if not isinstance(sensors, dict):
        raise AnswerError('no "nodemcu" object')
    values: list[tuple[str, float]] = []
    problems: list[str] = []
    booting = False
    for sensor, readings in sensors.items():
        if not isinstance(readings, dict):
            problems.append(f"{sensor} is not an object")
            continue
        for key, raw in readings.items():
            name = f"{sensor}.{key}"
            booting = booting or raw == ""
            try:
                values.append((name, _value(name, raw)))
            except ValueError as exc:
                problems.append(str(exc))
    if booting and (_PROBE_MEAN, 0.0) in values:
        values.remove((_PROBE_MEAN, 0.0))
        problems.append(f"{_PROBE_MEAN} is 0.00 before the first read (booting)")
    if not values:
        raise AnswerError("no usable value" + (": " + "; ".join(problems) if problems else ""))
    return Answer(tuple(values), tuple(problems))


def interpret(line: RawLine, device: str, source: str) -> tuple[Receipt, list[Measurement]]:
    """A raw log line's receipt and values (for the importer; the collector decides alike)."""
    if line.verdict == "failed" or not line.end.isdigit():
        return Receipt(source, device, FAMILY, line.ts, "failed", 0, None, line.detail), []
    try:
        answer = parse_answer(int(line.end), line.payload)
    except AnswerError as exc:
        return Receipt(source, device, FAMILY, line.ts, "bad", 0, None, str(exc)), []
    return answer.receipt(device, line.ts, source), answer.measurements(device, line.ts, source)


# --- the devices file ------------------------------------------------------------------------

@dataclass(frozen=True)
class PullDevice:
    """A polled device: its name (raw log directory and table name), URL and interval."""

    name: str
    url: str
    interval_s: float

    @property
    def interval_us(self) -> int:
        return round(self.interval_s * _US)

    @property
    def phase_us(self) -> int:
        """Where in each interval its polls fall: spread by name, the same on every start."""
        return zlib.crc32(self.name.encode()) * self.interval_us >> 32

    def slot_index(self, at_us: int) -> int:
        """The index of its first slot at or after `at_us` (µs since 1970, UTC)."""
        return -((self.phase_us - at_us) // self.interval_us)

    def slot_us(self, index: int) -> int:
        return self.phase_us + index * self.interval_us

    def polled_every(self, refresh_s: float) -> PullDevice:
        """The device as polled: an interval under the device's refresh becomes the refresh.

        The firmware answers with the values of its last sensor read, made every refresh
        (pull_refresh_seconds), so polling it faster only repeats them."""
        if self.interval_s >= refresh_s:
            return self
        return dataclasses.replace(self, interval_s=refresh_s)

    def lateness_s(self, at_us: int) -> float:
        """How long after its nearest slot `at_us` is (negative: before it)."""
        offset = (at_us - self.phase_us) % self.interval_us
        if offset * 2 > self.interval_us:
            offset -= self.interval_us
        return offset / _US


def _parse_device(line: str) -> PullDevice:
    fields = line.rstrip("\r\n").split("\t")
    if len(fields) != 3:
        raise ValueError(f"expected name<TAB>URL<TAB>interval seconds, found {len(fields)} "
                         "tab-separated field(s)")
    name, url, interval = (f.strip() for f in fields)
    if not NAME_RE.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"device name {name!r} is not a safe directory name "
                         "(letters, digits, '.', '_', '-'; not '.' or '..')")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"URL {url!r} is not an http:// or https:// URL with a host")
    try:
        interval_s = float(interval)
    except ValueError:
        raise ValueError(f"interval {interval!r} is not a number of seconds") from None
    if not (math.isfinite(interval_s) and interval_s > 0):
        raise ValueError(f"interval {interval!r} is not a positive number of seconds")
    return PullDevice(name, url, interval_s)


def read_devices_file(path: Path, strict: bool = True) -> list[PullDevice]:
    """The devices of a TSV (name, URL, interval s; `#` comments).

    Strict (serve's check, the collector): ConfigError names file:line of the first bad or
    repeated line. An interval under pull_refresh_seconds is no error (see polled_every).
    Tolerant (the pages, which show what they can): such a line is left out, and an
    unreadable file gives none, logged as a warning.
    """
    try:
        # Tolerant, a stray byte spoils only its own line.
        text = Path(path).read_text(encoding="utf-8", errors="strict" if strict else "replace")
    except (OSError, UnicodeDecodeError) as exc:
        if strict:
            raise ConfigError(f"pull_devices_file {path}: cannot read it: {exc}") from None
        log.warning("pull_devices_file %s: cannot read it: %s", path, exc)
        return []
    devices: list[PullDevice] = []
    lines_of: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            device = _parse_device(line)
            if device.name in lines_of:
                raise ValueError(f"device name {device.name!r} is already used on line "
                                 f"{lines_of[device.name]}")
        except ValueError as exc:
            if strict:
                raise ConfigError(f"{path}:{number}: {exc}") from None
            continue
        lines_of[device.name] = number
        devices.append(device)
    return devices


class DevicesFileWatch:
    """The devices file as the collector follows it: parsed again whenever its bytes change.

    The bytes, not the stat: two writes within one tick of the file system's clock can leave
    mtime, size and inode alike, and the file is small. A version that cannot be used (a bad
    line, the file removed or unreadable) is logged once, naming file:line, and `devices`
    stays the last good version (none before the first).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.devices: list[PullDevice] = []
        self.error: str | None = None  # why the file's current version is not used
        self._seen: bytes | None = None
        self._read_once = False

    def _current(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except OSError:
            return None  # removed or unreadable: read_devices_file says why

    def check(self) -> bool:
        """Parse the file if it changed since the last check; True when `devices` changed."""
        current = self._current()
        if self._read_once and current == self._seen:
            return False
        self._seen, self._read_once = current, True
        try:
            devices = read_devices_file(self.path)
        except ConfigError as exc:
            self.error = str(exc)
            log.error("%s (still polling the %d device(s) of its last good version)", exc,
                      len(self.devices))
            return False
        if self.error is not None:
            log.info("pull_devices_file %s is good again", self.path)
        self.error = None
        changed, self.devices = devices != self.devices, devices
        return changed
