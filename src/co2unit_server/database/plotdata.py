"""What the plots and pages show, read from the database: deployment groups and binned series.

Everything is UTC. Timestamps are compared as real times: deployments are stored as
'YYYY-MM-DD HH:MM:SS' and compared with a reading's (date, time) or, turned into the
'YYYY-MM-DDTHH:MM:SS' form, with a ping's ping_ts. Aggregation happens in SQL.
"""

from __future__ import annotations

import math
import sqlite3
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..core.timestamps import to_epoch
from .aggregates import BUCKET_SECONDS, CO2_N_SQL, CO2_SUM_SQL, EPOCH_SQL, TEMP_SQL

# The plots' file names (here, not in plots.py, so that checking them needs no matplotlib).
CO2_ALL = "co2_tiered_all_hires.svg"
CO2_RECENT = "co2_tiered_recent_hires.svg"
PINGS_ALL = "pings_all_tiered.svg"
PLOT_OUTPUTS = (CO2_ALL, CO2_RECENT, PINGS_ALL)
TS_FORMAT = "%Y-%m-%d %H:%M:%S"
STATUS_DEPLOYED = "deployed"


def to_text(epoch: float, sep: str = " ") -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime(TS_FORMAT).replace(" ", sep)


@dataclass(frozen=True)
class Period:
    """One row of deploy_durations_tiered (status None: a unit with no deployment row)."""

    unit_id: str
    nickname: str | None = None
    site: str | None = None
    tier: int | None = None
    status: str | None = None
    start: float | None = None  # epoch seconds; None: since the beginning
    end: float | None = None  # None: still going

    def clip(self, lo: float, hi: float) -> tuple[float, float] | None:
        """The part of [lo, hi) inside this period, or None."""
        start = lo if self.start is None else max(lo, self.start)
        end = hi if self.end is None else min(hi, self.end)
        return (start, end) if start < end else None


def current_deployment(periods: list[Period], now: float) -> Period | None:
    """The unit's latest period with status `deployed` that has started."""
    started = [p for p in periods if p.status == STATUS_DEPLOYED
               and (p.start is None or p.start <= now)]
    return max(started, key=lambda p: p.start or 0.0, default=None)


@dataclass
class Group:
    """One subplot: consecutive, non-overlapping periods at one site (or of one unit)."""

    label: str
    tier: int | None
    periods: list[Period] = field(default_factory=list)

    @property
    def units(self) -> list[str]:
        return list(dict.fromkeys(p.nickname or p.unit_id for p in self.periods))


def _distinct_units(conn: sqlite3.Connection, table: str) -> list[str]:
    # Hops along the (unit_id, ...) index: one lookup per unit instead of a full scan.
    sql = (f"WITH RECURSIVE u(id) AS (SELECT min(unit_id) FROM {table} UNION ALL "
           f"SELECT (SELECT min(unit_id) FROM {table} WHERE unit_id > u.id) FROM u "
           "WHERE u.id IS NOT NULL) SELECT id FROM u WHERE id IS NOT NULL")
    return [row[0] for row in conn.execute(sql)]


def reading_units(conn: sqlite3.Connection) -> list[str]:
    return _distinct_units(conn, "co2_readings")


def ping_units(conn: sqlite3.Connection) -> list[str]:
    return _distinct_units(conn, "pings")


def push_units(conn: sqlite3.Connection) -> list[str]:
    """Units in the server's push_daily statistics."""
    return _distinct_units(conn, "push_daily")


def periods(conn: sqlite3.Connection) -> list[Period]:
    rows = conn.execute("SELECT unit_id, nickname, site, tier, status, start_ts, end_ts "
                        "FROM deploy_durations_tiered ORDER BY start_ts, unit_id")
    return [Period(u, n, s, t, st, to_epoch(a) if a else None, to_epoch(b) if b else None)
            for u, n, s, t, st, a, b in rows]


def _lanes(items: list[Period]) -> list[list[Period]]:
    """Split periods into runs where each starts after the previous one ended."""
    lanes: list[list[Period]] = []
    for p in sorted(items, key=lambda p: -math.inf if p.start is None else p.start):
        lane = next((lane for lane in lanes if lane[-1].end is not None
                     and p.start is not None and lane[-1].end <= p.start), None)
        if lane is None:
            lanes.append([p])
        else:
            lane.append(p)
    return lanes


def groups(all_periods: list[Period], units: Iterable[str], min_tier: int | None = None,
           max_tier: int | None = None) -> list[Group]:
    """Subplot groups, highest tier first; units never deployed get a group of their own."""
    by_label: dict[str, list[Period]] = defaultdict(list)
    for p in all_periods:
        by_label[p.site or p.nickname or p.unit_id].append(p)
    deployed = {p.unit_id for p in all_periods}
    for unit in units:
        if unit not in deployed:
            by_label[unit].append(Period(unit))
    result = []
    for label, items in by_label.items():
        lanes = _lanes(items)
        for n, lane in enumerate(lanes, 1):
            tiers = [p.tier for p in lane if p.tier is not None]
            name = label if n == 1 else f"{label} ({n})"
            result.append(Group(name, max(tiers) if tiers else None, lane))
    if min_tier is not None or max_tier is not None:
        result = [g for g in result if g.tier is not None
                  and (min_tier is None or g.tier >= min_tier)
                  and (max_tier is None or g.tier <= max_tier)]
    return sorted(result, key=lambda g: (g.tier is None, -(g.tier or 0), g.label))


def readings_extent(conn: sqlite3.Connection, units: Iterable[str]) -> tuple[float, float] | None:
    """First and last reading time over these units (two index lookups per unit)."""
    first, last = [], []
    for unit in units:
        for order, out in (("", first), (" DESC", last)):
            row = conn.execute("SELECT date || ' ' || time FROM co2_readings WHERE unit_id = ? "
                               f"ORDER BY unit_id{order}, date{order}, time{order} LIMIT 1",
                               (unit,)).fetchone()
            if row:
                out.append(row[0])
    return (to_epoch(min(first)), to_epoch(max(last))) if first else None


def pings_extent(conn: sqlite3.Connection) -> tuple[float, float] | None:
    lo, hi = conn.execute("SELECT min(ping_ts), max(ping_ts) FROM pings").fetchone()
    return (to_epoch(lo[:19]), to_epoch(hi[:19])) if lo else None


_RAW_SQL = f"""SELECT CAST(({EPOCH_SQL} - ?) / ? AS INTEGER) AS i, total({CO2_SUM_SQL}),
    total({CO2_N_SQL}), total({TEMP_SQL}), count({TEMP_SQL})
    FROM co2_readings WHERE unit_id = ? AND (date, time) >= (?, ?) AND (date, time) < (?, ?)
    GROUP BY i"""
_BINS_SQL = f"""SELECT CAST((bucket * {BUCKET_SECONDS} - ?) / ? AS INTEGER) AS i, total(co2_sum),
    total(co2_n), total(temp_sum), total(temp_n)
    FROM co2_bins WHERE unit_id = ? AND bucket >= ? AND bucket < ? GROUP BY i"""


def _raw(conn: sqlite3.Connection, unit: str, lo: float, hi: float, t0: float,
         width: float) -> list[tuple]:
    if lo >= hi:
        return []
    a, b = to_text(lo).split(" "), to_text(hi).split(" ")
    return conn.execute(_RAW_SQL, (t0, width, unit, *a, *b)).fetchall()


def bin_grid(lo: float, hi: float, bins: int) -> tuple[float, float]:
    """(t0, width) of about `bins` bins over [lo, hi); wide bins hold whole co2_bins buckets."""
    width = (hi - lo) / bins
    if width < BUCKET_SECONDS:
        return lo, width
    return lo - lo % BUCKET_SECONDS, math.ceil(width / BUCKET_SECONDS) * BUCKET_SECONDS


def co2_bins(conn: sqlite3.Connection, unit: str, lo: float, hi: float, t0: float,
             width: float) -> list[tuple]:
    """(bin, co2 sum, co2 count, temp sum, temp count) of a unit's readings in [lo, hi).

    Bins are `width` seconds from t0. Wide bins come from co2_bins, with the exact readings at
    both ends so that a period's boundaries stay exact to the second.
    """
    if width < BUCKET_SECONDS or hi - lo < 2 * BUCKET_SECONDS:
        return _raw(conn, unit, lo, hi, t0, width)
    first, end = math.ceil(lo / BUCKET_SECONDS), math.floor(hi / BUCKET_SECONDS)
    rows = conn.execute(_BINS_SQL, (t0, width, unit, first, end)).fetchall()
    return (_raw(conn, unit, lo, first * BUCKET_SECONDS, t0, width) + rows
            + _raw(conn, unit, end * BUCKET_SECONDS, hi, t0, width))


def ping_bins(conn: sqlite3.Connection, unit: str, lo: float, hi: float, t0: float,
              width: float) -> list[tuple]:
    """(bin, best dBm, pings) of a unit's pings in [lo, hi)."""
    return conn.execute(
        "SELECT CAST((unixepoch(ping_ts) - ?) / ? AS INTEGER) AS i, max(rssi_dbm), count(*) "
        "FROM pings WHERE unit_id = ? AND ping_ts >= ? AND ping_ts < ? GROUP BY i",
        (t0, width, unit, to_text(lo, "T"), to_text(hi, "T"))).fetchall()
