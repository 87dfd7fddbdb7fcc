"""Ping logs (the server's `pings/` and other servers' `<dir>/var/pings/`) into pings."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path

from ...core.timestamps import utc_datetime
from ...database.state import transaction
from ...records.pinglog import INSERT_PING, PING_FILE_RE
from ...records.readings import HW_ID, NON_PRINTING
from . import sources
from .report import StageReport

KIND = "pings"
# Exactly what the server writes, so its live rows and the imported ones share the key.
TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"


def _timestamp(raw: str) -> datetime | None:
    try:
        return utc_datetime(raw)
    except ValueError:
        return None


def _int_or_null(raw: str, report: StageReport) -> int | None:
    if raw == "None":
        return None
    try:
        return int(raw)
    except ValueError:
        report.add("nulled", "unparseable signal field")
        return None


def parse_line(line: str, file_id: int, line_no: int, report: StageReport) -> tuple | None:
    """One pings row from a 5- or 6-column line, or None (counted) when it cannot be trusted."""
    if NON_PRINTING.search(line):
        report.drop(file_id, line_no, "non-printing bytes", line)
        return None
    f = line.split("\t")
    if len(f) not in (5, 6):
        report.drop(file_id, line_no, "wrong field count", line)
        return None
    ts = _timestamp(f[0])
    if ts is None:
        report.drop(file_id, line_no, "unparseable timestamp", line)
        return None
    if not HW_ID.fullmatch(f[1]):
        report.drop(file_id, line_no, "garbled hw_id", line)
        return None
    # Older logs drop the microseconds when they are zero: normalise to the server's key.
    ts_text = f[0] if len(f[0]) == 26 and f[0][10] == "T" else ts.strftime(TS_FORMAT)
    signal = [_int_or_null(v, report) for v in f[3:]] + [None] * (6 - len(f))
    nickname = None if f[2] == "None" else f[2]
    return (ts_text, ts_text[:10], ts_text[11:19], f[1], nickname, *signal)


def ping_dirs(data_dir: Path, db_dir: Path) -> list[tuple[Path, str, str]]:
    """(root, key prefix, dir) of the server's own log and copies of other servers' logs."""
    dirs = [(db_dir, "db", "pings")]
    dirs += [(data_dir, "data", f"{rel}/var/pings") for rel in sources.unit_candidates(data_dir)]
    return dirs


def import_pings(conn: sqlite3.Connection, data_dir: Path, db_dir: Path,
                 report: StageReport) -> None:
    """Import new ping lines; pings the server already inserted are ignored by the key."""
    found: list[sources.Found] = []
    for root, prefix, rel in ping_dirs(data_dir, db_dir):
        found += [f for f in sources.find_files(root, prefix, [(rel, rel)], ".tsv")
                  if PING_FILE_RE.fullmatch(f.path.name)]
    report.files = len(found)
    with transaction(conn):
        plan = sources.plan(conn, KIND, found)
        # The pings table is also the server's: rows stay; a replaced log is read again.
        sources.forget(conn, plan.vanished)
        sources.forget_dropped(conn, plan.work)
    report.files_replaced = len(plan.replaced) + len(plan.vanished)
    for work in plan.work:
        data, start = sources.read_new(work)
        first = 1 if work.restart else work.state.lines_done + 1
        text = data.decode("utf-8", "surrogateescape")
        lines = text.split("\n")[:-1]
        rows = [row for n, line in enumerate(lines, first)
                if (row := parse_line(line, work.state.id, n, report)) is not None]
        with transaction(conn):
            new = conn.executemany(INSERT_PING, rows).rowcount if rows else 0
            sources.save(conn, work, start + len(data), first - 1 + len(lines))
        report.add("imported", "rows", new)
        report.add("duplicate", "already in pings (live from the server, or another log)",
                   len(rows) - new)
    report.files_read = len(plan.work)
