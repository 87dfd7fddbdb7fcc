"""The measurement store: where the gateways put parsed values, and where pages read them.

The gateways only call `open_store(config)` and `MeasurementStore.add`: a second database
engine is a second class here, nothing else changes. SQLite writes go through a writer process
(store_writer), after the raw log line they come from is durable. What the fleet pages, the API
and research.measurements read is queried below, so its SQL is in this one module too.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ..core.config import Config
from .rows import REFUSED, Receipt
from .store_writer import ProcessStore
from .tables import BATCH_ROWS, Column, ResearchError, Table, TimeLike, time_range


class MeasurementStore(Protocol):
    def add(self, receipt: Receipt, rows: Sequence[tuple]) -> None:
        """Queue a receipt and its values, rows of `measurements` (a Measurement is one);
        never raises for a database problem (it is logged)."""

    def add_many(self, items: Sequence[tuple[Receipt, Sequence[tuple]]]) -> None:
        """add() for each (receipt, rows), queued at once (one wake-up of the writer)."""

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued is written (or given up); False on timeout."""

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued (waiting up to `timeout`), then let go of the database."""


def open_store(config: Config) -> MeasurementStore:
    """The store the settings name (SQLite, the embedded default, is the one there is),
    written by a process of its own (store_writer)."""
    return ProcessStore(config.db_path, config.db_busy_timeout_ms, config.log_level)


# --- reading: the fleet pages, the API and research.measurements

_REFUSED_SQL = "(" + ", ".join(f"'{v}'" for v in REFUSED) + ")"
# Each distinct device of a table, one index seek per device (SQLite has no skip-scan for
# DISTINCT): a year of polls is a million rows, a device list is a few.
_DEVICES = """WITH RECURSIVE d(device) AS (
        SELECT min(device) FROM {table}
        UNION ALL SELECT (SELECT min(device) FROM {table} WHERE device > d.device) FROM d
        WHERE d.device IS NOT NULL)
    SELECT d.device, (SELECT family FROM {table} WHERE device = d.device LIMIT 1)
    FROM d WHERE d.device IS NOT NULL"""
# Per device: counts in the window (ranges on the (device, ts, source) key and on the index of
# refused receipts, which the planner would pass over for the key without being told), and its
# newest receipt and newest good one, each a seek backwards.
_NEWEST_OK = (f"FROM gateway_receipts WHERE device = u.value AND verdict NOT IN {_REFUSED_SQL} "
              "ORDER BY ts DESC LIMIT 1")
_RECEIPT_STATS = f"""SELECT u.value,
    (SELECT family FROM gateway_receipts WHERE device = u.value LIMIT 1),
    (SELECT count(*) FROM gateway_receipts WHERE device = u.value AND ts >= :since),
    (SELECT count(*) FROM gateway_receipts INDEXED BY gateway_receipts_refused
        WHERE device = u.value AND ts >= :since AND verdict IN {_REFUSED_SQL}),
    (SELECT max(ts) FROM gateway_receipts WHERE device = u.value),
    (SELECT ts {_NEWEST_OK}),
    (SELECT expected_s {_NEWEST_OK})
    FROM json_each(:devices) AS u"""
# The newest value of each name of each device, among the device's newest LATEST_ROWS values
# (a name none of them has is no longer measured): a seek to where those begin, a range scan
# from there on the (device, ts, name) key, and max(ts) picks each name's row (SQLite gives
# the other columns of an aggregate from the row max() chose).
LATEST_ROWS = 200
_LATEST = """SELECT m.device, m.name, max(m.ts), m.value
    FROM json_each(:devices) AS u JOIN measurements AS m ON m.device = u.value
        AND m.ts >= ifnull((SELECT ts FROM measurements WHERE device = u.value
                            ORDER BY ts DESC LIMIT 1 OFFSET :rows), '')
    GROUP BY m.device, m.name ORDER BY m.device, m.name"""


@dataclass(frozen=True)
class ReceiptStats:
    """A device's receipts: counts since a time, and its newest ones (UTC text, None: none)."""

    device: str
    family: str
    received: int  # receipts since `since`
    refused: int  # of those, verdict bad or failed
    last_received: str | None
    last_ok: str | None  # the newest receipt not refused (ok, partial or unknown)
    expected_s: float | None  # of that receipt (TCP: expectedWakeupTime; pull: none)


@dataclass(frozen=True)
class LatestValue:
    name: str
    ts: str
    value: float


def receipt_devices(conn: sqlite3.Connection) -> dict[str, str]:
    """Every device with a receipt, and its family."""
    return dict(conn.execute(_DEVICES.format(table="gateway_receipts")).fetchall())


def measurement_devices(conn: sqlite3.Connection) -> list[str]:
    """Every device with a measurement, sorted."""
    return [device for device, _ in conn.execute(_DEVICES.format(table="measurements"))]


def receipt_stats(conn: sqlite3.Connection, devices: Iterable[str], since: str
                  ) -> dict[str, ReceiptStats]:
    """Receipt counts since `since` (UTC text) and the newest receipts of each device that has
    any."""
    rows = conn.execute(_RECEIPT_STATS, {"devices": json.dumps(sorted(set(devices))),
                                         "since": since})
    return {row[0]: ReceiptStats(*row) for row in rows if row[1] is not None}


def latest_values(conn: sqlite3.Connection, devices: Iterable[str]
                  ) -> dict[str, list[LatestValue]]:
    """The newest value of each name of each device's newest LATEST_ROWS values, by name."""
    latest: dict[str, list[LatestValue]] = {}
    rows = conn.execute(_LATEST, {"devices": json.dumps(sorted(set(devices))),
                                  "rows": LATEST_ROWS - 1})
    for device, name, ts, value in rows:
        latest.setdefault(device, []).append(LatestValue(name, ts, value))
    return latest


def recent_receipts(conn: sqlite3.Connection, device: str, limit: int) -> list[Receipt]:
    """The device's newest `limit` receipts, newest first."""
    rows = conn.execute(
        "SELECT source, device, family, ts, verdict, stored, expected_s, ifnull(detail, '') "
        "FROM gateway_receipts WHERE device = ? ORDER BY ts DESC, source DESC LIMIT ?",
        (device, limit))
    return [Receipt(*row) for row in rows]


def _bounds(lo: datetime | None, hi: datetime | None) -> dict[str, str]:
    # Stored times always have microseconds: bounds written alike compare exactly as text.
    return {"lo": lo.isoformat(timespec="microseconds") if lo else "",
            "hi": hi.isoformat(timespec="microseconds") if hi else "~"}


# The long table of measurements (a row per value), for the API's CSV and JSON (streamed by
# toolchain.export) and research.measurements (which pivots it).
MEASUREMENTS = Table(
    name="measurements",
    source="measurements",
    columns=(Column("time", "s.ts || 'Z'", "time"), Column("device", "s.device", "text"),
             Column("name", "s.name", "text"), Column("value", "s.value", "real")),
    needs=frozenset({"device", "ts", "name", "value", "session"}),
    where="s.device = :unit AND s.ts >= :lo AND s.ts < :hi "
          "AND (:names IS NULL OR s.name IN (SELECT value FROM json_each(:names))) "
          "AND (:session IS NULL OR s.session = :session)",
    order="s.ts, s.name",
    bounds=_bounds,
    units=measurement_devices,
)


def measurement_batches(conn: sqlite3.Connection, devices: str | Iterable[str] | None = None,
                        start: TimeLike = None, end: TimeLike = None,
                        names: Iterable[str] | None = None, *, encoding: str | None = None,
                        size: int = BATCH_ROWS, session: str | None = None
                        ) -> Iterator[list[tuple]]:
    """MEASUREMENTS rows of `devices` (None: all) in [start, end), by device then time; of
    one streaming session only when `session` (an id) is given.

    A row is a value per column, or with an `encoding` (csv, json) the pieces its line is
    joined from (see database.tables). Checks the arguments and the schema at once,
    before the first batch is asked for.
    """
    lo, hi = time_range(start, end)
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(measurements)")}
    except sqlite3.DatabaseError as exc:
        raise ResearchError(f"not a readable SQLite database: {exc}") from exc
    if not MEASUREMENTS.needs <= columns:
        raise ResearchError("not a co2unit database, or one from before the gateways (run "
                            "`co2unit-server import` on it): it has no measurements table")
    if session is not None and not isinstance(session, str):
        raise ResearchError(f"session must be a session id, got {session!r}")
    chosen = measurement_devices(conn) if devices is None else sorted(_texts(devices, "devices"))
    wanted = None if names is None else json.dumps(sorted(_texts(names, "names")))
    sql = MEASUREMENTS.query(encoding)

    def rows() -> Iterator[list[tuple]]:
        for device in chosen:
            cursor = conn.execute(sql, {"unit": device, "names": wanted, "session": session,
                                        **_bounds(lo, hi)})
            while batch := cursor.fetchmany(size):
                yield batch

    return rows()


def _texts(given: str | Iterable[str], what: str) -> set[str]:
    """One name or several (none: nothing is read), as a set; ResearchError for anything else."""
    if isinstance(given, str):
        chosen = [given]
    elif isinstance(given, Iterable):
        chosen = list(given)
    else:
        chosen = [given]
    if not all(isinstance(n, str) and n for n in chosen):
        raise ResearchError(f"{what} must be one name or a list of names, got {given!r}")
    return set(chosen)
