"""The gateways' devices at a glance (TCP weather stations, polled NodeMCUs), live.

Shared by /fleet, /api/units and `co2unit-server check`, as fleet_status is for the CO2 units;
figures come from the gateway_receipts and measurements tables (measurement_store) and the
pull devices file. A device's status comes from the last data it sent: its newest receipt that
was not refused (ok, partial, or unknown: a packet of a device ID with no record format yet
still shows that the station is alive), judged against its interval (a TCP device's
expectedWakeupTime as its last valid packet gave it; a polled device's interval in
pull_devices_file):

- alive: data within LATE_INTERVALS of its family (TCP 2: one missed wake-up is normal on a
  weak link; pull 3: a poll may fail twice, and failures back off);
- late: longer; silent: longer than that times silent_after_hours / late_after_hours (the CO2
  units' rule scaled: 72 / 26 by default, so 5.5 TCP or 8.3 poll intervals);
- never seen: nothing usable ever (a polled device that never answered well, a TCP device
  whose packets were all bad);
- unknown: a polled device no longer in pull_devices_file (no interval to judge it by).

Watched (counted by `check`, and first on the page when in trouble) are the devices of
pull_devices_file and the TCP devices heard from in the last RETIRED_AFTER_DAYS: a TCP device
is not configured anywhere, so one silent for longer is taken as retired (still listed).
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..core.config import Config
from ..core.timestamps import DAY
from ..database.measurement_store import (
    LatestValue,
    latest_values,
    receipt_devices,
    receipt_stats,
    recent_receipts,
)
from ..database.rows import Receipt
from ..records.pull_format import FAMILY as PULL
from ..records.pull_format import read_devices_file
from ..records.rawlog import ts_text, ts_us
from ..records.tcp_format import FAMILY as TCP
from .fleet_status import (
    ALIVE,
    LATE,
    NEVER_SEEN,
    SILENT,
    STATUSES,
    UNKNOWN,
    WINDOW_DAYS,
    ago,
    iso_z,
)

FAMILIES = (TCP, PULL)
LATE_INTERVALS = {TCP: 2.0, PULL: 3.0}
RETIRED_AFTER_DAYS = 30
RECENT_RECEIPTS = 50  # on a device's page
_PROBLEM_RANK = {SILENT: 0, NEVER_SEEN: 1, LATE: 2}


@dataclass
class DeviceRow:
    """One gateway device's line on the fleet page; times are epoch seconds (UTC)."""

    device: str
    family: str
    status: str = NEVER_SEEN
    listed: bool = False  # in pull_devices_file
    watched: bool = False  # counted by `check` (see the module's doc)
    interval_s: float | None = None  # expected time between packets or polls
    last_received: float | None = None  # newest receipt, refused or not
    last_data: float | None = None  # newest receipt not refused
    received_7d: int = 0
    refused_7d: int = 0  # verdict bad or failed
    values: list[LatestValue] = field(default_factory=list)

    @property
    def problem(self) -> bool:
        return self.watched and self.status in _PROBLEM_RANK

    @property
    def rank(self) -> int:
        """0 for the worst trouble, then unknown devices (3), then the rest (4)."""
        if self.problem:
            return _PROBLEM_RANK[self.status]
        return 3 if self.status == UNKNOWN else 4

    def problem_line(self, now: float) -> str:
        """Its line in `check`'s output."""
        seen = ("no data ever" if self.last_data is None else
                f"last data {iso_z(self.last_data)} ({ago(now - self.last_data)} ago)")
        every = f", expected every {ago(self.interval_s)}" if self.interval_s else ""
        return f"{self.status.upper()} {self.device} ({self.family} device): {seen}{every}"


@dataclass
class DeviceDetail:
    """A device's page: its row and newest receipts (newest first)."""

    row: DeviceRow
    receipts: list[Receipt]


def pull_intervals(path: Path | None, refresh_s: float = 0.0) -> dict[str, float]:
    """Name -> interval each device of the pull devices file is polled at, read tolerantly.

    The collector polls no device sooner than `refresh_s` (pull_refresh_seconds); it keeps
    the last good version of a bad file, the pages show what they can of the current one.
    """
    if path is None:
        return {}
    return {device.name: device.polled_every(refresh_s).interval_s
            for device in read_devices_file(path, strict=False)}


def fleet_devices(conn: sqlite3.Connection, config: Config, now: float | None = None,
                  devices: list[str] | None = None) -> list[DeviceRow]:
    """A row per gateway device (or per device of `devices` that is known), problems first."""
    now = time.time() if now is None else now
    listed = pull_intervals(config.pull_devices_file, config.pull_refresh_seconds)
    families = receipt_devices(conn)
    for name in listed:
        families.setdefault(name, PULL)
    chosen = sorted(families if devices is None else set(devices) & set(families))
    rows = {d: DeviceRow(d, families[d], listed=d in listed, interval_s=listed.get(d))
            for d in chosen}
    since = ts_text(int((now - WINDOW_DAYS * DAY) * 1_000_000))
    for device, stats in receipt_stats(conn, chosen, since).items():
        row = rows[device]
        row.received_7d, row.refused_7d = stats.received, stats.refused
        row.last_received, row.last_data = _epoch(stats.last_received), _epoch(stats.last_ok)
        if row.family == TCP:
            row.interval_s = stats.expected_s
    for device, values in latest_values(conn, chosen).items():
        rows[device].values = values
    for row in rows.values():
        row.status = status(row, config, now)
        row.watched = row.listed if row.family == PULL else (
            row.last_received is not None and now - row.last_received < RETIRED_AFTER_DAYS * DAY)
    return sorted(rows.values(), key=lambda r: (r.rank, r.family, r.device))


def _epoch(text: str | None) -> float | None:
    return None if text is None else ts_us(text) / 1_000_000


def status(row: DeviceRow, config: Config, now: float) -> str:
    """alive, late, silent by the age of its last data; never seen; unknown (see the doc)."""
    if row.family == PULL and not row.listed:
        return UNKNOWN
    if row.last_data is None or row.interval_s is None:
        return NEVER_SEEN
    late_s = LATE_INTERVALS[row.family] * row.interval_s
    silent_s = late_s * config.silent_after_hours / config.late_after_hours
    age = now - row.last_data
    return ALIVE if age < late_s else LATE if age < silent_s else SILENT


def device_detail(conn: sqlite3.Connection, config: Config, device: str,
                  now: float | None = None) -> DeviceDetail | None:
    """Everything a device's page shows, or None for a device never seen nor listed."""
    rows = fleet_devices(conn, config, now, [device])
    if not rows:
        return None
    return DeviceDetail(rows[0], recent_receipts(conn, device, RECENT_RECEIPTS))


def summary(rows: list[DeviceRow]) -> str:
    """'N gateway devices: x alive, …; p need attention'."""
    counts = Counter(row.status for row in rows)
    parts = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s])
    problems = sum(row.problem for row in rows)
    return (f"{len(rows)} gateway device{'' if len(rows) == 1 else 's'}"
            + (f": {parts}" if parts else "") + f"; {problems} need attention")


def values_text(values: list[LatestValue]) -> str:
    """'humidity 54.997 · light 1234 · temperature 21.501' (5 significant digits)."""
    return " · ".join(f"{v.name} {v.value:.5g}" for v in values)
