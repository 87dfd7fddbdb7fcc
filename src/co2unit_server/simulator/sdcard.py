"""A simulated unit's SD card: what it measures and logs, and its saved sync state.

Layout as on a real card: `data/readings/readings-NNNN.tsv`, `errors/errors-NNNN.txt`,
`updates/`, `conf/ou-id.json`, `var/ou-comm-state.json`. Pushed files are append-only and
rotate like the firmware's seqfile: a line goes to the last file while it is under 100 KiB, so
a file ends at most one line past it; a line is always appended whole. As co2_ou_device's
co2unit_measure: a reading every 30 minutes (at :00 and :30, a few seconds in), the temperature
and each of the 10 CO2 reads `None` on its own when it failed, the first two reads the ones
that glitch, the 5 raw values all present or all `None`.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

READINGS_DIR = "data/readings"
ERRORS_DIR = "errors"
UPDATES_DIR = "updates"
PUSH_DIRS = (ERRORS_DIR, READINGS_DIR)  # in the order a unit pushes them
OU_ID_PATH = "conf/ou-id.json"
STATE_PATH = "var/ou-comm-state.json"
ROTATE_BYTES = 100 * 1024
READING_INTERVAL = timedelta(minutes=30)
LOST_CLOCK = datetime(1970, 1, 1)
COMM_WAKE = timedelta(hours=3, minutes=15)  # the current firmware's daily Communicate task

_SEQ_NAMES = {READINGS_DIR: ("readings", "tsv"), ERRORS_DIR: ("errors", "txt")}


@dataclass(frozen=True)
class Irregularities:
    """Per-line (readings) or per-day (errors) probabilities of what real cards contain."""

    glitch: float = 0.01         # sensor start-up value 0 or 200010 ppm in a first two reads
    none: float = 0.005          # `None` for a failed read (temperature or one CO2 read)
    lost_clock: float = 0.003    # clock lost: dated 1970-01-01
    nonprinting: float = 0.001   # SD corruption: non-printing bytes in a line
    temp85: float = 0.002        # the sensor's 85.0 fault temperature
    test_lines: float = 0.2      # a new card starts with old test lines (per card)
    warning: float = 0.1         # a WARN entry on a day (recovery, backoff)
    exception: float = 0.05      # an uncaught exception (EXC, traceback) on a day
    tuple_date: float = 0.5      # an entry dated the old firmware's way (time tuple)

    @classmethod
    def parse(cls, text: str) -> Irregularities:
        """Parse `name=rate,name=rate` over the defaults."""
        known = {f.name for f in fields(cls)}
        values: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, _, rate = item.partition("=")
            if name not in known:
                raise ValueError(f"unknown irregularity {name!r}; "
                                 f"known: {', '.join(sorted(known))}")
            values[name] = float(rate)
        return cls(**values)


def entry_date(ts: datetime, as_tuple: bool) -> str:
    """An error-log date: `2019-09-16 10:55:57`, or the old firmware's time tuple."""
    if not as_tuple:
        return ts.strftime("%Y-%m-%d %H:%M:%S")
    t = ts.timetuple()
    return str((t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, t.tm_wday,
                t.tm_yday))


def error_entry(ts: datetime, level: str, message: str, traceback: list[str] | None = None,
                as_tuple: bool = False) -> bytes:
    """One error-log entry: `----- <date> <LEVEL:5> <message>` and optional traceback lines."""
    lines = [f"----- {entry_date(ts, as_tuple)} {level:<5} {message}", *(traceback or [])]
    return ("\n".join(lines) + "\n").encode("utf-8")


def traceback_lines(rng: random.Random, error: str) -> list[str]:
    """A MicroPython-style traceback ending in `error`."""
    frames = rng.sample([("main.py", "<module>"), ("co2unit_main.py", "run"),
                         ("co2unit_comm.py", "comm_sequence"), ("co2unit_measure.py", "measure"),
                         ("urequests.py", "request")], 3)
    return (["Traceback (most recent call last):"]
            + [f'  File "{f}", line {rng.randint(20, 400)}, in {fn}' for f, fn in frames]
            + [error])


def raw_values(rng: random.Random, co2: int, irr: Irregularities) -> list[Any]:
    """The ExplorIR raw read (Z, d, o, h, v) of firmware from 2020-01-14 on; None if it failed."""
    if rng.random() < irr.none:
        return [None] * 5
    return [co2 // 10, rng.randint(30000, 36000), rng.randint(26000, 30000), 32626,
            rng.randint(1000, 1200)]


def reading_line(rng: random.Random, hw_id: str, nickname: str | None, ts: datetime,
                 flashes: int, irr: Irregularities, raw: bool = False) -> bytes:
    """One measurement in the unit format: 16 tab-separated fields (21 with `raw`), irregularities
    included."""
    if rng.random() < irr.lost_clock:
        ts = LOST_CLOCK + timedelta(seconds=rng.randint(0, 3600))
    temp = 85.0 if rng.random() < irr.temp85 else round(rng.uniform(-5, 25) * 16) / 16
    base = rng.randint(400, 900)
    co2: list[Any] = [base + rng.randint(-30, 30) for _ in range(10)]
    if rng.random() < irr.glitch:
        co2[rng.randrange(2)] = rng.choice([0, 200010])
    values: list[Any] = [temp, flashes, *co2]
    if rng.random() < irr.none:
        # The flash count comes from memory, never from a sensor: it is never None.
        values[rng.choice([0, *range(2, len(values))])] = None
    if raw:
        values += raw_values(rng, base, irr)
    text = "\t".join([hw_id, str(nickname), ts.strftime("%Y-%m-%d"), ts.strftime("%H:%M:%S"),
                      *map(str, values)])
    line = text.encode("utf-8")
    if rng.random() < irr.nonprinting:
        cut = rng.randrange(len(line))
        line = line[:cut] + bytes([rng.choice([0, 1, 0x1b, 0xff])]) + line[cut:]
    return line + b"\n"


class SdCard:
    """One card's directory; everything a unit keeps between cycles lives here."""

    def __init__(self, root: Path, rotate_bytes: int = ROTATE_BYTES) -> None:
        self.root = root
        self.rotate_bytes = rotate_bytes

    def format(self, hw_id: str, nickname: str | None) -> None:
        """Prepare an empty card for a unit, as done before deployment."""
        for name in (READINGS_DIR, ERRORS_DIR, UPDATES_DIR, "conf", "var"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        self.write_json(OU_ID_PATH, {"hw_id": hw_id, "site_code": nickname})

    # -- identity and config
    def read_json(self, rel: str, default: Any = None) -> Any:
        try:
            return json.loads((self.root / rel).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return default

    def write_json(self, rel: str, value: Any) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(value), encoding="utf-8")
        os.replace(tmp, path)

    @property
    def hw_id(self) -> str:
        return self.read_json(OU_ID_PATH)["hw_id"]

    @property
    def nickname(self) -> str | None:
        return self.read_json(OU_ID_PATH).get("site_code")

    # -- saved sync state (the firmware's var/ou-comm-state.json)
    def load_state(self) -> dict[str, Any]:
        state = self.read_json(STATE_PATH) or {}
        state.setdefault("sync_states", {})
        state.setdefault("signal_quality", None)
        return state

    def save_state(self, state: dict[str, Any]) -> None:
        self.write_json(STATE_PATH, state)

    def lose_state(self) -> None:
        """Forget where the pushes were, as when the state file is lost or corrupted."""
        (self.root / STATE_PATH).unlink(missing_ok=True)

    # -- pushed, append-only, rotating files
    def files(self, dirname: str) -> list[str]:
        """The files of a pushed directory, sorted by name as the unit pushes them."""
        try:
            return sorted(os.listdir(self.root / dirname))
        except FileNotFoundError:
            return []

    def append(self, dirname: str, data: bytes) -> None:
        """Append whole lines to the directory's last file, starting the next one past rotate."""
        stem, ext = _SEQ_NAMES[dirname]
        directory = self.root / dirname
        directory.mkdir(parents=True, exist_ok=True)
        names = self.files(dirname)
        if not names:
            name = f"{stem}-0000.{ext}"
        elif (directory / names[-1]).stat().st_size >= self.rotate_bytes:
            name = f"{stem}-{int(names[-1][len(stem) + 1:-len(ext) - 1]) + 1:04d}.{ext}"
        else:
            name = names[-1]
        with open(directory / name, "ab") as f:
            f.write(data)

    def log(self, entry: bytes) -> None:
        self.append(ERRORS_DIR, entry)

    def measure(self, rng: random.Random, start: datetime, end: datetime,
                irr: Irregularities, raw: bool = False) -> int:
        """Append the readings of the half hours in [start, end) (21 fields with `raw`); returns
        how many."""
        ts, count = start + (datetime.min - start) % READING_INTERVAL, 0
        if not self.files(READINGS_DIR) and rng.random() < irr.test_lines:
            self.append(READINGS_DIR, b"test\t1\t2\t3\n" * rng.randint(1, 3))
        while ts < end:
            jitter = timedelta(seconds=rng.randint(5, 15))
            line = reading_line(rng, self.hw_id, self.nickname, ts + jitter,
                                rng.choice([0, 0, 0, 1, 2]), irr, raw)
            self.append(READINGS_DIR, line)
            ts += READING_INTERVAL
            count += 1
        return count

    def log_day(self, rng: random.Random, day: datetime, irr: Irregularities) -> None:
        """The error-log entries of one day: start-up info, sometimes warnings and exceptions."""
        def when() -> datetime:
            # Between this day's wake-up for communication and the next: the log stays in order.
            return day + COMM_WAKE + timedelta(seconds=rng.randint(60, 86340))

        # What the firmwares log besides their communication (which the unit logs itself).
        entries = []
        if rng.random() < irr.warning:
            entries.append((when(), "WARN", rng.choice([
                "Skipping comm due to backoff: 1/2",
                "Had to run recovery procedure. Watchdog reset?"]), None))
        if rng.random() < irr.exception:
            error = rng.choice(["OSError: [Errno 110] ETIMEDOUT", "MemoryError: ",
                                "OSError: sensor not responding"])
            entries.append((when(), "EXC", "Uncaught exception at top level",
                            traceback_lines(rng, error)))
        for ts, level, message, tb in sorted(entries, key=lambda e: e[0]):
            self.log(error_entry(ts, level, message, tb, rng.random() < irr.tuple_date))
