"""The fleet at a glance: every unit with its status and figures, live.

Shared by the /fleet pages, the JSON API and `co2unit-server check` (status/check.py, which
counts the gateways' devices of gateway_status too). The figures come from what
the server keeps current itself (the pings and push_daily tables, the push store, the update
states) and the deployment table, never from `make`'s import. A few queries whatever the size
of the fleet, each a seek per unit on the tables' indexes (no query per unit).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import statistics
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ..core.config import Config
from ..core.files import natural_key
from ..core.timestamps import DAY, to_epoch
from ..database import db, plotdata
from ..records.pinglog import tail_lines
from ..updates.delivery import UpdateState, update_states

ALIVE, LATE, SILENT, NEVER_SEEN, UNKNOWN = "alive", "late", "silent", "never seen", "unknown"
STATUSES = (ALIVE, LATE, SILENT, NEVER_SEEN, UNKNOWN)
# Rank of a deployed unit's trouble on the page, worst first; everything else comes after.
_PROBLEM_RANK = {SILENT: 0, NEVER_SEEN: 1, LATE: 2}
WINDOW_DAYS = 7  # signal median, bytes and error entries
HISTORY_DAYS = 30  # pings on a unit's page
ERROR_TAIL_LINES = 40
PUSHED_DIRS = ("data/readings", "errors")


@dataclass
class UnitRow:
    """One unit's line on the fleet page; times are epoch seconds (UTC)."""

    hw_id: str
    status: str = UNKNOWN
    nickname: str | None = None
    site: str | None = None
    tier: int | None = None
    deployment: str | None = None  # status of its current deployment period, if any
    listed: bool = False  # has rows in the deployment table
    last_ping: float | None = None
    rssi_dbm: int | None = None  # of the last ping
    rssi_median: float | None = None  # of the last WINDOW_DAYS' pings
    last_push: float | None = None
    last_reading: float | None = None  # the newest reading pushed (by the unit's clock)
    bytes_7d: int = 0
    errors_7d: int = 0  # error-log entries received
    updates: list[UpdateState] = field(default_factory=list)

    @property
    def deployed(self) -> bool:
        return self.deployment == plotdata.STATUS_DEPLOYED

    @property
    def problem(self) -> bool:
        """A deployed unit that is late, silent or never seen."""
        return self.deployed and self.status in _PROBLEM_RANK

    @property
    def rank(self) -> int:
        """0 for the worst trouble, then unknown units (3), then the rest (4)."""
        if self.problem:
            return _PROBLEM_RANK[self.status]
        return 3 if self.status == UNKNOWN else 4


@dataclass(frozen=True)
class PushedFile:
    directory: str  # data/readings or errors
    name: str
    size: int
    mtime: float


@dataclass
class UnitDetail:
    """A unit's page: its row, deployment rows, recent pings, pushed files, error-log tail."""

    row: UnitRow
    deployments: list[dict]  # rows of deploy_durations_tiered, by start
    pings: list[dict]  # of the last HISTORY_DAYS, newest first
    files: list[PushedFile]
    error_log: str | None  # name of the newest error log
    error_tail: list[str]


# --- the fleet


def fleet(conn: sqlite3.Connection, config: Config, now: float | None = None,
          units: Iterable[str] | None = None, with_updates: bool = True) -> list[UnitRow]:
    """A row per unit ever seen (or per unit of `units`), problems first."""
    now = time.time() if now is None else now
    periods: dict[str, list[plotdata.Period]] = defaultdict(list)
    for period in plotdata.periods(conn):
        periods[period.unit_id].append(period)
    chosen = sorted(known_units(conn, config, periods) if units is None else set(units))
    rows = {unit: UnitRow(unit) for unit in chosen}
    ids = json.dumps(chosen)
    _add_pings(conn, rows, ids, now)
    _add_pushes(conn, rows, ids, now)
    for unit, row in rows.items():
        _add_deployment(row, periods.get(unit, []), now)
        row.status = status(row, config, now)
    if with_updates and rows:
        # The whole fleet: only the units with an updates/ directory are looked at.
        wanted = None if units is None else chosen
        for unit, states in update_states(conn, config.remote_data_dir, wanted).items():
            if unit in rows:
                rows[unit].updates = list(states)
    return sorted(rows.values(), key=_order)


def known_units(conn: sqlite3.Connection, config: Config, listed: Iterable[str]) -> set[str]:
    """Units that pinged, pushed (push_daily or a directory in the push store) or are listed."""
    return (set(plotdata.ping_units(conn)) | set(plotdata.push_units(conn)) | set(listed)
            | pushed_units(config.remote_data_dir, config.hw_id_pattern))


def pushed_units(remote_data: Path, hw_id_pattern: str) -> set[str]:
    """The unit directories of the push store."""
    pattern = re.compile(hw_id_pattern)
    try:
        with os.scandir(remote_data) as entries:
            return {e.name for e in entries if pattern.fullmatch(e.name) and e.is_dir()}
    except (FileNotFoundError, NotADirectoryError):
        return set()


# Each unit's newest ping: one seek on (unit_id, ping_ts), then its row by rowid. Times come
# as epoch seconds from SQLite: parsing them in Python was a tenth of the page's time.
_LAST_PINGS = """SELECT u.value, unixepoch(p.ping_ts), p.nickname, p.rssi_dbm
    FROM json_each(?) AS u
    JOIN pings AS p ON p.rowid = (SELECT rowid FROM pings WHERE unit_id = u.value
                                  ORDER BY ping_ts DESC LIMIT 1)"""
# The window's pings of every unit at once, on the (ping_ts) index.
_RECENT_DBM = """SELECT unit_id, rssi_dbm FROM pings
    WHERE ping_ts >= ? AND rssi_dbm IS NOT NULL AND unit_id IN (SELECT value FROM json_each(?))"""
# Per unit: the window's sums (a seek on the (unit_id, day) key), and its newest push and
# reading, which may be older than the window.
_PUSHES = """SELECT u.value, total(d.bytes), total(d.error_entries),
    unixepoch(max(d.last_reading_ts)),
    (SELECT unixepoch(last_push_ts) FROM push_daily WHERE unit_id = u.value
        ORDER BY day DESC LIMIT 1),
    (SELECT unixepoch(last_reading_ts) FROM push_daily WHERE unit_id = u.value
        AND last_reading_ts IS NOT NULL ORDER BY day DESC LIMIT 1)
    FROM json_each(?) AS u LEFT JOIN push_daily AS d ON d.unit_id = u.value AND d.day >= ?
    GROUP BY u.value"""


def _add_pings(conn: sqlite3.Connection, rows: dict[str, UnitRow], ids: str,
               now: float) -> None:
    for unit, epoch, nickname, dbm in conn.execute(_LAST_PINGS, (ids,)):
        row = rows[unit]
        row.last_ping, row.nickname, row.rssi_dbm = epoch, nickname, dbm
    by_unit: dict[str, list[int]] = defaultdict(list)
    since = plotdata.to_text(now - WINDOW_DAYS * DAY, "T")
    for unit, dbm in conn.execute(_RECENT_DBM, (since, ids)):
        by_unit[unit].append(dbm)
    for unit, values in by_unit.items():
        rows[unit].rssi_median = statistics.median(values)


def _add_pushes(conn: sqlite3.Connection, rows: dict[str, UnitRow], ids: str,
                now: float) -> None:
    # The window is today and the WINDOW_DAYS - 1 UTC days before it (push_daily's days).
    first_day = plotdata.to_text(now - (WINDOW_DAYS - 1) * DAY)[:10]
    for unit, size, errors, window_reading, push, reading in conn.execute(_PUSHES,
                                                                          (ids, first_day)):
        row = rows[unit]
        row.bytes_7d, row.errors_7d = int(size), int(errors)
        row.last_push = push
        row.last_reading = max(filter(None, (window_reading, reading)), default=None)


def _add_deployment(row: UnitRow, periods: list[plotdata.Period], now: float) -> None:
    """Nickname, site, tier and status of the period covering now (the latest started)."""
    row.listed = bool(periods)
    current = [p for p in periods if (p.start is None or p.start <= now)
               and (p.end is None or now < p.end)]
    if not current:
        return
    period = max(current, key=lambda p: -float("inf") if p.start is None else p.start)
    row.nickname = period.nickname or row.nickname
    row.site, row.tier, row.deployment = period.site, period.tier, period.status


def status(row: UnitRow, config: Config, now: float) -> str:
    """alive, late, silent by the last ping's age; never seen; unknown if in no deployment."""
    if not row.listed:
        return UNKNOWN
    if row.last_ping is None:
        return NEVER_SEEN
    age_hours = (now - row.last_ping) / 3600
    if age_hours < config.late_after_hours:
        return ALIVE
    return LATE if age_hours < config.silent_after_hours else SILENT


def _order(row: UnitRow) -> tuple:
    return (row.rank, row.tier is None, -(row.tier or 0), row.site or "", row.hw_id)


def summary(rows: list[UnitRow]) -> str:
    """'N units: x alive, y late, …; k deployed, p need attention'."""
    counts = Counter(row.status for row in rows)
    parts = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s])
    deployed = sum(row.deployed for row in rows)
    problems = sum(row.problem for row in rows)
    return (f"{len(rows)} unit{'' if len(rows) == 1 else 's'}" + (f": {parts}" if parts else "")
            + f"; {deployed} deployed, {problems} need attention")


# --- one unit


def unit_detail(conn: sqlite3.Connection, config: Config, hw_id: str,
                now: float | None = None) -> UnitDetail | None:
    """Everything the unit's page shows, or None for a unit never seen."""
    now = time.time() if now is None else now
    if not seen(conn, config, hw_id):
        return None
    row = fleet(conn, config, now, [hw_id])[0]
    unit_dir = config.remote_data_dir / hw_id
    deployments = _dicts(conn.execute(
        "SELECT nickname, site, tier, status, start_ts, end_ts, note FROM "
        "deploy_durations_tiered WHERE unit_id = ? ORDER BY start_ts IS NOT NULL, start_ts",
        (hw_id,)))
    pings = _dicts(conn.execute(
        "SELECT ping_ts, nickname, rssi_raw, rssi_dbm, ber_raw FROM pings WHERE unit_id = ? "
        "AND ping_ts >= ? ORDER BY ping_ts DESC",
        (hw_id, plotdata.to_text(now - HISTORY_DAYS * DAY, "T"))))
    files = pushed_files(config.remote_data_dir, hw_id)
    logs = [f for f in files if f.directory == "errors"]
    tail = _tail(unit_dir / "errors" / logs[-1].name) if logs else []
    return UnitDetail(row, deployments, pings, files, logs[-1].name if logs else None, tail)


def _tail(path: Path) -> list[str]:
    try:
        return tail_lines(path, ERROR_TAIL_LINES)
    except OSError:  # moved aside to superseded/ a moment ago
        return []


def seen(conn: sqlite3.Connection, config: Config, hw_id: str) -> bool:
    """Whether the unit pinged, pushed, is in the deployment table or has imported readings."""
    if (config.remote_data_dir / hw_id).is_dir():
        return True
    return any(conn.execute(f"SELECT 1 FROM {table} WHERE unit_id = ? LIMIT 1",
                            (hw_id,)).fetchone()
               for table in ("pings", "push_daily", "deploy_durations_tiered", "co2_readings"))


def _dicts(cursor: sqlite3.Cursor) -> list[dict]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, values, strict=True)) for values in cursor]


def pushed_files(remote_data: Path, hw_id: str) -> list[PushedFile]:
    """The unit's pushed readings files and error logs, each directory in sequence order."""
    found = []
    for directory in PUSHED_DIRS:
        try:
            with os.scandir(remote_data / hw_id / directory) as entries:
                files = [(e.name, e.stat()) for e in entries if e.is_file(follow_symlinks=False)]
        except (FileNotFoundError, NotADirectoryError):
            continue
        found += [PushedFile(directory, name, st.st_size, st.st_mtime)
                  for name, st in sorted(files, key=lambda f: natural_key(f[0]))]
    return found


# --- the server's connection


_schema_ready: set[tuple[int, int]] = set()
_schema_lock = threading.Lock()


@contextmanager
def server_db(db_path: Path, busy_timeout_ms: int) -> Iterator[sqlite3.Connection]:
    """A connection for one request, in one read snapshot; empty tables before the first ping."""
    if not db_path.exists():
        conn = db.empty_database()
    else:
        conn = db.connect(db_path, busy_timeout_ms)
        _ensure_schema(conn, db_path)
        conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.close()


def _ensure_schema(conn: sqlite3.Connection, db_path: Path) -> None:
    # Once per database file and process: an older database gets the newer tables.
    st = db_path.stat()
    with _schema_lock:
        if (st.st_dev, st.st_ino) not in _schema_ready:
            db.init_schema(conn)
            _schema_ready.add((st.st_dev, st.st_ino))


# --- formatting shared by the pages, the API and `check`


def iso_z(value: float | str | datetime | None) -> str | None:
    """A time as ISO UTC with Z, to the second; None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = to_epoch(value.removesuffix("Z"))
    elif isinstance(value, datetime):
        value = (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))


def ago(seconds: float | None) -> str:
    """A duration for people: '12 min', '5.2 h', '3.1 d'."""
    if seconds is None:
        return "–"
    if seconds < 3600:
        return f"{max(seconds, 0) / 60:.0f} min"
    if seconds < 2 * DAY:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / DAY:.1f} d"
