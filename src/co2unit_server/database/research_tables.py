"""The research tables (readings, pings) with each row's deployment: their one SQL query.

One piece of code behind `co2unit_server.research` (pandas DataFrames) and `co2unit-server
export` (CSV, JSON), so both give the same rows and columns. It imports no pandas, so the
command line starts fast.

The deployment join: a unit's periods in deploy_durations_tiered are cut into segments that do
not overlap (where periods overlap, the one that started latest wins; between periods there is
none). Each segment, clipped to the requested time range, is one range query on the table's
(unit_id, time) index, with the segment's deployment bound as constant columns: no lookup per
row, no temporary table, nothing written to the database.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from .aggregates import CO2_N_SQL, CO2_SUM_SQL, GLITCH_PPM, TEMP_SQL
from .db import RAW_COLUMNS
from .plotdata import ping_units, reading_units
from .tables import BATCH_ROWS, Column, ResearchError, Table, TimeLike, parse_time, time_range

# Open bounds as text every date or timestamp sorts after / before.
_LOWEST, _HIGHEST = "", "~"


def _text(ts: datetime, sep: str) -> str:
    """A bound as the tables store time: seconds, and microseconds only when there are any."""
    return ts.strftime(f"%Y-%m-%d{sep}%H:%M:%S" + (".%f" if ts.microsecond else ""))


def _reading_bounds(lo: datetime | None, hi: datetime | None) -> dict[str, str]:
    lo_date, _, lo_time = _text(lo, " ").partition(" ") if lo else (_LOWEST, "", "")
    hi_date, _, hi_time = _text(hi, " ").partition(" ") if hi else (_HIGHEST, "", "")
    return {"lo_date": lo_date, "lo_time": lo_time, "hi_date": hi_date, "hi_time": hi_time}


def _ping_bounds(lo: datetime | None, hi: datetime | None) -> dict[str, str]:
    # ping_ts always has microseconds; a bound without them still compares right as text.
    return {"lo": _text(lo, "T") if lo else _LOWEST, "hi": _text(hi, "T") if hi else _HIGHEST}


DEPLOYMENT = ("deployment_nickname", "site", "tier", "status")
_DEPLOYMENT_COLUMNS = tuple(Column(name, f":{name}", "int" if name == "tier" else "text")
                            for name in DEPLOYMENT)
_CO2 = tuple(f"co2_{i:02d}" for i in range(1, 11))
# The plots' per-reading sum and count of real values (no NULL, 0 or 200010 ppm), after a
# shortcut for the usual reading whose ten values are all real (scalar min/max are NULL when
# any value is): it halves the cost of the column.
_CO2_MEAN = (f"CASE WHEN min({', '.join(_CO2)}) > {GLITCH_PPM[0]} "
             f"AND max({', '.join(_CO2)}) < {GLITCH_PPM[1]} THEN ({' + '.join(_CO2)}) / 10.0 "
             f"ELSE ({CO2_SUM_SQL}) * 1.0 / nullif({CO2_N_SQL}, 0) END")

READINGS = Table(
    name="readings",
    source="co2_readings",
    columns=(
        Column("time", "printf('%sT%sZ', s.date, s.time)", "time"),
        Column("unit_id", "s.unit_id", "text"),
        Column("nickname", "s.nickname", "text"),
        Column("temp", TEMP_SQL, "real"),
        Column("flash_count", "s.flash_count", "int"),
        *(Column(c, f"s.{c}", "int") for c in _CO2),
        Column("co2_mean", _CO2_MEAN, "real"),
        *(Column(c, f"s.{c}", "int") for c in RAW_COLUMNS),
        *_DEPLOYMENT_COLUMNS,
    ),
    needs=frozenset({"unit_id", "nickname", "date", "time", "temp", "flash_count",
                     *_CO2, *RAW_COLUMNS}),
    # A row value range on (date, time): SQLite searches the (unit_id, date, time) index.
    where="s.unit_id = :unit AND (s.date, s.time) >= (:lo_date, :lo_time) "
          "AND (s.date, s.time) < (:hi_date, :hi_time)",
    order="s.date, s.time",
    bounds=_reading_bounds,
    units=reading_units,
)

PINGS = Table(
    name="pings",
    source="pings",
    columns=(
        Column("time", "s.ping_ts || 'Z'", "time"),
        Column("unit_id", "s.unit_id", "text"),
        Column("nickname", "s.nickname", "text"),
        Column("rssi_raw", "s.rssi_raw", "int"),
        Column("rssi_dbm", "s.rssi_dbm", "int"),
        Column("ber_raw", "s.ber_raw", "int"),
        *_DEPLOYMENT_COLUMNS,
    ),
    needs=frozenset({"ping_ts", "unit_id", "nickname", "rssi_raw", "rssi_dbm", "ber_raw"}),
    where="s.unit_id = :unit AND s.ping_ts >= :lo AND s.ping_ts < :hi",
    order="s.ping_ts",
    bounds=_ping_bounds,
    units=ping_units,
)

TABLES = {t.name: t for t in (READINGS, PINGS)}


def _check_schema(conn: sqlite3.Connection, table: Table) -> None:
    try:
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table.source})")}
        deployments = conn.execute("PRAGMA table_info(deploy_durations_tiered)").fetchall()
    except sqlite3.DatabaseError as exc:
        raise ResearchError(f"not a readable SQLite database: {exc}") from exc
    missing = sorted(table.needs - have) or ([] if deployments else ["deploy_durations_tiered"])
    if missing:
        raise ResearchError(f"not a co2unit database, or one from an older version (run "
                            f"`co2unit-server import` on it): {table.source} lacks "
                            + ", ".join(missing))


def unit_list(conn: sqlite3.Connection, table: Table, units: str | Iterable[str] | None
              ) -> list[str]:
    """The units to read, sorted: one hw_id, several, or (None) every unit in the table."""
    if units is None:
        return table.units(conn)
    chosen = [units] if isinstance(units, str) else list(units)
    if not all(isinstance(u, str) for u in chosen):
        raise ResearchError(f"units must be hw_id strings, got {units!r}")
    return sorted(set(chosen))


@dataclass(frozen=True)
class Period:
    """[start, end) of one unit with one deployment (values all None: none); None is open."""

    start: datetime | None
    end: datetime | None
    values: dict[str, object]  # the DEPLOYMENT columns


NO_DEPLOYMENT = dict.fromkeys(DEPLOYMENT)


def deployments(conn: sqlite3.Connection) -> dict[str, list[Period]]:
    """Each unit's rows of deploy_durations_tiered, in table order (later rows win ties)."""
    periods: dict[str, list[Period]] = {}
    for unit, nickname, site, tier, status, start, end in conn.execute(
            "SELECT unit_id, nickname, site, tier, status, start_ts, end_ts "
            "FROM deploy_durations_tiered ORDER BY rowid"):
        values = dict(zip(DEPLOYMENT, (nickname, site, tier, status), strict=True))
        periods.setdefault(unit, []).append(
            Period(parse_time(start, "start_ts"), parse_time(end, "end_ts"), values))
    return periods


def _covers(p: Period, a: datetime | None, b: datetime | None) -> bool:
    """Whether p holds all of [a, b), which lies wholly inside or outside every period."""
    starts_before = p.start is None or (a is not None and p.start <= a)
    ends_after = p.end is None or (b is not None and p.end >= b)
    return starts_before and ends_after


def segments(periods: list[Period], lo: datetime | None, hi: datetime | None) -> list[Period]:
    """[lo, hi) cut where a period starts or ends, each piece with the latest-started period."""
    cuts = sorted({t for p in periods for t in (p.start, p.end) if t is not None
                   and (lo is None or t > lo) and (hi is None or t < hi)})
    edges = [lo, *cuts, hi]
    out: list[Period] = []
    for a, b in zip(edges, edges[1:], strict=False):
        if a is not None and b is not None and a >= b:
            continue
        covering = [(p.start or datetime.min, i) for i, p in enumerate(periods)
                    if _covers(p, a, b)]
        values = periods[max(covering)[1]].values if covering else NO_DEPLOYMENT
        if out and out[-1].values == values:
            out[-1] = Period(out[-1].start, b, values)
        else:
            out.append(Period(a, b, values))
    return out


def batches(conn: sqlite3.Connection, table: Table, units: str | Iterable[str] | None = None,
            start: TimeLike = None, end: TimeLike = None, *, encoding: str | None = None,
            size: int = BATCH_ROWS) -> Iterator[list[tuple]]:
    """The table's rows in lists of up to `size`, by unit then time.

    A row is a value per column (`table.columns`), or with an `encoding` (csv, json) the
    pieces that `table.line_template(encoding)` joins into the row's line. Checks arguments
    and schema at once, before the first batch is asked for.
    """
    lo, hi = time_range(start, end)
    _check_schema(conn, table)
    chosen = unit_list(conn, table, units)
    periods = deployments(conn)
    sql = table.query(encoding)

    def rows() -> Iterator[list[tuple]]:
        for unit in chosen:
            for seg in segments(periods.get(unit, []), lo, hi):
                params = {"unit": unit, **seg.values, **table.bounds(seg.start, seg.end)}
                cursor = conn.execute(sql, params)
                while batch := cursor.fetchmany(size):
                    yield batch

    return rows()
