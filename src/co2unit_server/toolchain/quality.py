"""Data quality per unit: what reached co2_readings, what the import dropped, and the gaps.

Kept in the `data_quality` table (one row per unit that pushed anything), rewritten after each
import for the units whose readings changed, and for every unit when the deployments changed,
on the first run of a UTC day (days deployed and the gap up to now move on) or when the table
is new. The CO2 summary page shows it; researchers can query it.
"""

from __future__ import annotations

import itertools
import operator
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..core.timestamps import DAY
from ..database.plotdata import STATUS_DEPLOYED, Period, periods, to_text
from ..database.state import read_state, transaction, write_state
from .importer.report import StageReport

STATE_DAY = "data_quality_day"  # toolchain_state: the UTC day of the last full rewrite
_COLUMNS = ("unit_id", "rows_imported", "rows_dropped", "lost_share", "first_reading",
            "last_reading", "days_deployed", "days_with_data", "longest_gap_days", "gap_from",
            "gap_to", "computed_at")
_INSERT = (f"INSERT OR REPLACE INTO data_quality ({', '.join(_COLUMNS)}) "
           f"VALUES ({', '.join('?' * len(_COLUMNS))})")
# A unit's readings in [from, to) along the (unit_id, date, time) index, oldest first.
_TIMES = ("SELECT unixepoch(date || ' ' || time) FROM co2_readings WHERE unit_id = :unit "
          "AND (date, time) >= (:lo_date, :lo_time) AND (date, time) < (:hi_date, :hi_time) "
          "ORDER BY date, time")
_EDGE = ("SELECT date || ' ' || time FROM co2_readings WHERE unit_id = ? "
         "ORDER BY date {0}, time {0} LIMIT 1")


@dataclass
class UnitQuality:
    """One row of data_quality, plus the dropped lines by reason for the page."""

    unit_id: str
    rows_imported: int = 0
    rows_dropped: int = 0
    first_reading: str | None = None
    last_reading: str | None = None
    days_deployed: float | None = None
    days_with_data: int = 0
    longest_gap_days: float | None = None
    gap_from: str | None = None
    gap_to: str | None = None
    computed_at: str = ""
    dropped_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def lost_share(self) -> float:
        seen = self.rows_imported + self.rows_dropped
        return self.rows_dropped / seen if seen else 0.0

    def row(self) -> tuple:
        return (self.unit_id, self.rows_imported, self.rows_dropped, self.lost_share,
                self.first_reading, self.last_reading, self.days_deployed, self.days_with_data,
                self.longest_gap_days, self.gap_from, self.gap_to, self.computed_at)


def pushing_units(conn: sqlite3.Connection) -> list[str]:
    """Every unit with a readings or errors file, whether or not a row of it was imported."""
    rows = conn.execute("SELECT DISTINCT substr(path, 6, instr(substr(path, 6), '/') - 1) "
                        "FROM import_files WHERE kind IN ('readings', 'errors')")
    return sorted(unit for (unit,) in rows if unit)


def dropped_by_unit(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
    result: dict[str, dict[str, int]] = defaultdict(dict)
    for unit, reason, count in conn.execute("SELECT unit_id, reason, rows FROM dropped_by_unit"):
        result[unit][reason] = count
    return result


def _merged(spans: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Overlapping or touching spans joined into one."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _deployed_spans(unit_periods: list[Period], first: float | None,
                    now: float) -> list[tuple[float, float]]:
    """The unit's `deployed` periods up to now; one open at the start begins at its first row."""
    spans = []
    for p in unit_periods:
        if p.status != STATUS_DEPLOYED:
            continue
        start = p.start if p.start is not None else first
        end = now if p.end is None else min(p.end, now)
        if start is not None and start < end:
            spans.append((start, end))
    return _merged(spans)


def _bounds(side: str, epoch: float) -> dict[str, str]:
    text = to_text(epoch)
    return {f"{side}_date": text[:10], f"{side}_time": text[11:]}


def _measure(conn: sqlite3.Connection, q: UnitQuality, spans: list[tuple[float, float]],
             edges: bool) -> None:
    """Days with data and the longest gap inside the spans (edges: from a span's ends too)."""
    days: set[int] = set()
    best: tuple[float, float | None, float | None] = (0.0, None, None)
    for start, end in spans:
        params = {"unit": q.unit_id, **_bounds("lo", start), **_bounds("hi", end)}
        # Plain lists and map(): a year of one unit takes milliseconds (a window function in
        # SQLite took twice as long).
        times = [e for (e,) in conn.execute(_TIMES, params)]
        days.update(map(operator.floordiv, times, itertools.repeat(int(DAY))))
        if edges:
            times = [start, *times, end]
        if len(times) > 1:
            gaps = zip(map(operator.sub, times[1:], times[:-1]), times[:-1], times[1:],
                       strict=True)
            best = max(best, max(gaps), key=lambda gap: gap[0])
    q.days_with_data = len(days)
    if best[1] is not None:
        q.longest_gap_days = best[0] / DAY
        q.gap_from, q.gap_to = to_text(best[1]), to_text(best[2])


def unit_quality(conn: sqlite3.Connection, unit: str, unit_periods: list[Period],
                 dropped: dict[str, int], now: float) -> UnitQuality:
    """The figures of one unit as of `now`."""
    q = UnitQuality(unit, computed_at=to_text(now), dropped_by_reason=dropped,
                    rows_dropped=sum(dropped.values()))
    q.rows_imported = conn.execute("SELECT count(*) FROM co2_readings WHERE unit_id = ?",
                                   (unit,)).fetchone()[0]
    if q.rows_imported:
        q.first_reading = conn.execute(_EDGE.format("ASC"), (unit,)).fetchone()[0]
        q.last_reading = conn.execute(_EDGE.format("DESC"), (unit,)).fetchone()[0]
    first = conn.execute("SELECT unixepoch(?)", (q.first_reading,)).fetchone()[0]
    spans = _deployed_spans(unit_periods, first, now)
    if spans:
        q.days_deployed = sum(end - start for start, end in spans) / DAY
        _measure(conn, q, spans, edges=True)
    elif first is not None:
        last = conn.execute("SELECT unixepoch(?)", (q.last_reading,)).fetchone()[0]
        _measure(conn, q, [(first, last + 1)], edges=False)
    return q


def _units_to_refresh(conn: sqlite3.Connection, reports: dict[str, StageReport],
                      today: str) -> list[str] | None:
    """The units to recompute, or None for all of them."""
    deployments = reports.get("deployments")
    changed = deployments is not None and (deployments.files_read or deployments.files_replaced)
    empty = conn.execute("SELECT count(*) FROM data_quality").fetchone()[0] == 0
    if changed or empty or read_state(conn, STATE_DAY) != today:
        return None
    readings = reports.get("readings")
    return sorted(readings.units) if readings else []


def update(conn: sqlite3.Connection, reports: dict[str, StageReport], now: float) -> int:
    """Rewrite the data_quality rows that may have changed; return how many."""
    now = float(int(now))
    today = to_text(now)[:10]
    todo = _units_to_refresh(conn, reports, today)
    units = pushing_units(conn) if todo is None else todo
    if not units:
        return 0
    by_unit: dict[str, list[Period]] = defaultdict(list)
    for p in periods(conn):
        by_unit[p.unit_id].append(p)
    dropped = dropped_by_unit(conn)
    rows = [unit_quality(conn, u, by_unit[u], dropped.get(u, {}), now).row() for u in units]
    with transaction(conn):
        if todo is None:
            conn.execute("DELETE FROM data_quality")
            write_state(conn, STATE_DAY, today)
        conn.executemany(_INSERT, rows)
    return len(rows)


def load(conn: sqlite3.Connection) -> list[UnitQuality]:
    """Every row of data_quality with its dropped lines by reason, most lost share first."""
    dropped = dropped_by_unit(conn)
    result = []
    for row in conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM data_quality"):
        values = dict(zip(_COLUMNS, row, strict=True))
        del values["lost_share"]
        result.append(UnitQuality(**values, dropped_by_reason=dropped.get(row[0], {})))
    return sorted(result, key=lambda q: (-q.lost_share, q.unit_id))


def summary_line(rows: list[UnitQuality], warn_share: float) -> str:
    """The toolchain's line on losses: every unit that lost rows, worst first."""
    lossy = [q for q in rows if q.rows_dropped]
    if not lossy:
        return f"data quality: {len(rows)} units, no rows lost"
    over = sum(q.lost_share > warn_share for q in lossy)
    return (f"data quality: {len(lossy)} of {len(rows)} units lost rows ({over} over "
            f"{warn_share:.1%}): " + ", ".join(
                f"{q.unit_id} {q.rows_dropped} of {q.rows_imported + q.rows_dropped} "
                f"({q.lost_share:.1%})" for q in lossy))


def refresh(conn: sqlite3.Connection, reports: dict[str, StageReport], now: float,
            warn_share: float, out: Callable[[str], None]) -> None:
    """Update data_quality after an import and print the summary line."""
    started = time.monotonic()
    updated = update(conn, reports, now)
    out(f"{summary_line(load(conn), warn_share)}; {updated} units updated in "
        f"{time.monotonic() - started:.2f} s")
