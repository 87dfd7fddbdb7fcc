"""Readings files (`<unit>/data/readings/*.tsv`, also under `superseded/`) into co2_readings."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from ...database import aggregates
from ...database.db import RAW_COLUMNS, REREAD
from ...database.state import transaction
from ...records.readings import (
    FIELDS,
    GOOD_LINE,
    HW_PREFIX,
    NON_PRINTING,
    RAW_FIELDS,
    parse_line,
    real_date,
)
from . import sources
from .report import StageReport

KIND = "readings"
# Rows per transaction: keeps memory flat and the server's ping inserts waiting briefly.
BATCH_ROWS = 20_000

_NO_RAW = [None] * RAW_FIELDS

_COLUMNS = (["unit_id", "nickname", "date", "time", "temp", "flash_count"]
            + [f"co2_{i:02d}" for i in range(1, 11)] + list(RAW_COLUMNS) + ["src_file", "src_line"])
# SQLite's column affinity turns the numeric text into INTEGER/REAL: no conversion in Python.
INSERT = (f"INSERT OR IGNORE INTO co2_readings ({', '.join(_COLUMNS)}) "
          f"VALUES ({', '.join('?' * len(_COLUMNS))})")


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
    match = GOOD_LINE.fullmatch
    for line_no, line in enumerate(text.split("\n")[:-1], first_line):
        f = line.split("\t") if match(line) else None
        # The pattern lets 2019-02-30 through: days past the 28th are checked on a calendar.
        if f is not None and (f[2][8:] < "29" or real_date(f[2])):
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
