"""Readings files (`<unit>/data/readings/*.tsv`, also under `superseded/`) into co2_readings."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from datetime import date
from pathlib import Path

from ...database.db import RAW_COLUMNS, REREAD
from . import aggregates, sources
from .report import StageReport
from .store import transaction

KIND = "readings"
HW_PREFIX = "co2unit-"
# Firmware before 2020-01-14 writes 16 fields; later firmware appends the sensor's 5 raw values.
FIELDS = 16
RAW_FIELDS = 5
FIELD_COUNTS = (FIELDS, FIELDS + RAW_FIELDS)
# Rows per transaction: keeps memory flat and the server's ping inserts waiting briefly.
BATCH_ROWS = 20_000

_FLOAT = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_INT = r"-?\d+"
# Printable text except tab; surrogates stand for bytes that were not UTF-8.
NON_PRINTING = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\udc80-\udcff]")
HW_ID = re.compile(r"co2unit-[0-9a-f]{12}")
# Real calendar fields only: SQLite and Python both refuse month 13, hour 24 or second 60.
_DATE_RE = r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
_TIME_RE = r"(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d"
# The firmware warns that its clocks are not set when they read a year up to 2010; the RTC
# restarts at 1970-01-01. Such a row's time is unknown.
_CLOCK_LOST_RE = r"1\d{3}-|200\d-|2010-"
_CLOCK_LOST = re.compile(_CLOCK_LOST_RE)
_DATE = re.compile(_DATE_RE)
_TIME = re.compile(_TIME_RE)
_NUMBER = [re.compile(_FLOAT)] + [re.compile(_INT)] * (11 + RAW_FIELDS)
# What is left of a number whose end was cut off: '-', '23.', '.'.
_CUT_NUMBER = re.compile(r"-?\d*\.?\d*")
# The common case in one C-level match (possessive: no backtracking into digits); anything
# else goes through parse_line().
_GOOD_LINE = re.compile(
    r"co2unit-[0-9a-f]{12}\t[^\t\x00-\x1f\x7f-\x9f\udc80-\udcff]*+\t(?!" + _CLOCK_LOST_RE + ")"
    + _DATE_RE + r"\t" + _TIME_RE +
    r"\t(?:-?\d++(?:\.\d++)?+(?:[eE][-+]?\d++)?+|None)" + r"\t(?:-?\d++|None)" * 11
    + r"(?:" + r"\t(?:-?\d++|None)" * RAW_FIELDS + r")?+")
_NO_RAW = [None] * RAW_FIELDS

_COLUMNS = (["unit_id", "nickname", "date", "time", "temp", "flash_count"]
            + [f"co2_{i:02d}" for i in range(1, 11)] + list(RAW_COLUMNS) + ["src_file", "src_line"])
# SQLite's column affinity turns the numeric text into INTEGER/REAL: no conversion in Python.
INSERT = (f"INSERT OR IGNORE INTO co2_readings ({', '.join(_COLUMNS)}) "
          f"VALUES ({', '.join('?' * len(_COLUMNS))})")


def _real_date(text: str) -> bool:
    """False for a day the month does not have (2019-02-30), which the pattern lets through."""
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _nickname(raw: str) -> str | None:
    return None if raw == "None" or raw.endswith("NICK") else raw


def parse_line(line: str) -> tuple[list | None, str, list[str]]:
    """Validate one line: (fields or None, why it was refused, reasons for fields set NULL)."""
    if NON_PRINTING.search(line):
        return None, "non-printing bytes", []
    if not line.startswith(HW_PREFIX):
        return None, "not a co2unit- line", []
    f = line.split("\t")
    if len(f) not in FIELD_COUNTS:
        return None, "wrong field count", []
    if not HW_ID.fullmatch(f[0]):
        return None, "garbled hw_id", []
    if not _DATE.fullmatch(f[2]) or not _real_date(f[2]):
        return None, "unparseable date", []
    if _CLOCK_LOST.match(f[2]):
        return None, "date before 2011 (clock not set)", []
    if not _TIME.fullmatch(f[3]):
        return None, "unparseable time", []
    nulled = []
    if f[1].endswith("NICK"):
        nulled.append("nickname ending in NICK")
    f[1] = _nickname(f[1])
    for i, pattern in enumerate(_NUMBER[:len(f) - 4], 4):
        value = f[i]
        if pattern.fullmatch(value):
            continue
        if value == "None":
            pass
        elif value == "":
            nulled.append("empty field")
        elif _CUT_NUMBER.fullmatch(value):
            nulled.append("truncated field")
        else:
            return None, "unparseable field", []
        f[i] = None
    return f, "", nulled


def salvage(line: str, file_id: int, line_no: int, report: StageReport) -> list | None:
    """Import what can be trusted of an irregular line, counting what is dropped or NULLed."""
    if not line.strip():
        # Firmware of 2019-07-26 wrote an extra newline after each row: no reading is lost.
        report.add("noted", "blank line")
        return None
    # A row cut by a power loss has the next row (or a NUL block and then a row) written onto
    # its line: the intact row is the last one, starting at the last hw_id.
    start = line.rfind(HW_PREFIX)
    if start > 0:
        fields, _, nulled = parse_line(line[start:])
        if fields is not None:
            damage = line[:start]
            why = ("non-printing bytes before a row" if NON_PRINTING.search(damage)
                   else "row cut off")
            report.drop(file_id, line_no, why, damage, outcome="recovered")
            return _finish(fields, nulled, file_id, line_no, report)
    fields, why, nulled = parse_line(line)
    if fields is None:
        report.drop(file_id, line_no, why, line)
        return None
    return _finish(fields, nulled, file_id, line_no, report)


def _finish(fields: list, nulled: list[str], file_id: int, line_no: int,
            report: StageReport) -> list:
    for reason in nulled:
        report.add("nulled", reason)
    if len(fields) == FIELDS:
        fields.extend(_NO_RAW)
    fields.append(file_id)
    fields.append(line_no)
    return fields


def parse_lines(text: str, file_id: int, first_line: int, report: StageReport) -> list[list]:
    """Rows of co2_readings from complete lines (text ends with a newline)."""
    rows = []
    match = _GOOD_LINE.fullmatch
    for line_no, line in enumerate(text.split("\n")[:-1], first_line):
        f = line.split("\t") if match(line) else None
        # The pattern lets 2019-02-30 through: days past the 28th are checked on a calendar.
        if f is not None and (f[2][8:] < "29" or _real_date(f[2])):
            if "None" in line:
                f = [None if v == "None" else v for v in f]
            if f[1] is not None and f[1].endswith("NICK"):
                report.add("nulled", "nickname ending in NICK")
                f[1] = None
            if len(f) == FIELDS:
                f += _NO_RAW
            f += (file_id, line_no)
            rows.append(f)
        else:
            row = salvage(line, file_id, line_no, report)
            if row is not None:
                rows.append(row)
    return rows


def _unit_of(key: str) -> str:
    return key.split(":", 1)[1].split("/", 1)[0]


def forget_replaced(conn: sqlite3.Connection, plan: sources.Plan, report: StageReport) -> None:
    """Delete the rows of replaced and vanished files; re-read their units' other files."""
    gone = plan.replaced + plan.vanished
    if not gone:
        return
    # Their rows may have hidden the same readings in a sibling file (INSERT OR IGNORE).
    sources.rescan_groups(plan, {_unit_of(s.key) for s in gone})
    with transaction(conn):
        for marked in (True, False):
            ids = [s.id for s in gone if (s.check_hash == REREAD) == marked]
            if ids:
                # One statement, one scan of the table (src_file has no index of its own):
                # a statement per file took 0.24 s each on 2 million rows.
                deleted = conn.execute("DELETE FROM co2_readings WHERE src_file IN "
                                       "(SELECT value FROM json_each(?))", (json.dumps(ids),))
                report.add("deleted", "marked to be read again" if marked
                           else "file replaced or gone", deleted.rowcount)
        sources.forget_dropped(conn, plan.work)
        sources.hold_restarts(conn, plan.work)
        sources.forget(conn, plan.vanished)
        aggregates.rebuild(conn)
    report.files_replaced = len(gone)


def import_readings(conn: sqlite3.Connection, data_dir: Path, report: StageReport) -> None:
    """Import the new complete lines of every readings file."""
    found = sources.find_files(data_dir, "data", sources.unit_dirs(data_dir, "data/readings"),
                               ".tsv")
    report.files = len(found)
    with transaction(conn):
        plan = sources.plan(conn, KIND, found)
    forget_replaced(conn, plan, report)
    report.units = {w.found.group for w in plan.work} | {_unit_of(s.key) for s in plan.vanished}
    batch: list[list] = []
    done: list[tuple[sources.Work, int, int]] = []
    for work in plan.work:
        data, start = sources.read_new(work)
        lines_before = 0 if work.restart else work.state.lines_done
        text = data.decode("utf-8", "surrogateescape")
        dropped_before = report.total("dropped")
        batch.extend(parse_lines(text, work.state.id, lines_before + 1, report))
        if report.total("dropped") > dropped_before:
            report.lost_by_unit[work.found.group] += report.total("dropped") - dropped_before
        done.append((work, start + len(data), lines_before + text.count("\n")))
        if len(batch) >= BATCH_ROWS:
            _store(conn, batch, done, report)
            batch, done = [], []
    _store(conn, batch, done, report)
    report.files_read = len(plan.work)
    started = time.monotonic()
    binned = aggregates.update(conn)
    report.add("binned", "rows added to co2_bins", binned)
    report.note = f"co2_bins: {binned} rows binned in {time.monotonic() - started:.2f} s"


def _store(conn: sqlite3.Connection, rows: list[list],
           done: list[tuple[sources.Work, int, int]], report: StageReport) -> None:
    """Insert rows, their files' dropped lines and progress in one transaction."""
    if not done:
        return
    with transaction(conn):
        new = conn.executemany(INSERT, rows).rowcount if rows else 0
        report.store_dropped(conn)
        for work, bytes_done, lines_done in done:
            sources.save(conn, work, bytes_done, lines_done)
    report.add("imported", "rows", new)
    report.add("duplicate", "same unit, date and time", len(rows) - new)
