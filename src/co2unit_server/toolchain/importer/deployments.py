"""The researchers' deployment table (deploy_durations_tiered.tsv) into deploy_durations_tiered.

Tab-separated with a header line; blank lines and lines starting with `#` are ignored (a `#`
elsewhere, say in a note, is text); empty cells are NULL. Timestamps are stored in UTC as
'YYYY-MM-DD HH:MM:SS' so they compare correctly with a reading's `date || ' ' || time`; a bare
date means the midnight that starts it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ...core.timestamps import utc_datetime
from ...database.state import transaction
from . import sources
from .report import StageReport

KIND = "deployments"
COLUMNS = ("unit_id", "nickname", "site", "tier", "status", "start_ts", "end_ts", "note")
STATUSES = ("deployed", "en_route", "lab_check")
TS_FORMAT = "%Y-%m-%d %H:%M:%S"


def utc_text(raw: str) -> str:
    """A date or date-time, with or without offset, as UTC 'YYYY-MM-DD HH:MM:SS'."""
    return utc_datetime(raw).strftime(TS_FORMAT)


def parse_row(header: list[str], cells: list[str]) -> tuple[dict | None, str]:
    """A row by column name, or None and why it cannot be used."""
    if len(cells) > len(header):
        # A tab typed into the note (the last column) stays part of the note.
        cells = cells[: len(header) - 1] + ["\t".join(cells[len(header) - 1:])]
    row = dict.fromkeys(COLUMNS)
    for name, cell in zip(header, cells, strict=False):
        if name in row:
            row[name] = cell.strip() or None
    if row["unit_id"] is None:
        return None, "no unit_id"
    try:
        row["tier"] = int(row["tier"]) if row["tier"] is not None else None
    except ValueError:
        return None, "tier is not an integer"
    for name in ("start_ts", "end_ts"):
        try:
            row[name] = utc_text(row[name]) if row[name] is not None else None
        except ValueError:
            return None, f"unparseable {name}"
    return row, ""


def parse(text: str, file_id: int, report: StageReport) -> list[tuple]:
    """Rows of the table from the whole file."""
    header: list[str] | None = None
    rows = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        cells = line.split("\t")
        if header is None and cells[0].strip() == "unit_id":
            header = [c.strip() for c in cells]
            continue
        row, why = parse_row(header or list(COLUMNS), cells)
        if row is None:
            report.drop(file_id, line_no, why, line)
            continue
        if row["status"] not in STATUSES:
            report.add("noted", f"unknown status {row['status']!r} (drawn as deployed)")
        rows.append(tuple(row[c] for c in COLUMNS))
    return rows


def import_deployments(conn: sqlite3.Connection, path: Path, report: StageReport) -> None:
    """Replace the table with the file's rows when the file changed; empty it when missing."""
    try:
        st = path.stat()
        found = [sources.Found(f"file:{path.resolve()}", path, "", st.st_size, st.st_mtime_ns,
                               st.st_ino)]
    except FileNotFoundError:
        found = []
        report.note = (f"no deployment table at {path}: deploy_durations_tiered is empty and "
                       "every unit is plotted as never deployed")
    report.files = len(found)
    with transaction(conn):
        plan = sources.plan(conn, KIND, found)
        sources.forget(conn, plan.vanished)
        if not (plan.work or plan.vanished or plan.replaced):
            return
        for work in plan.work:
            work.restart = True  # read whole, whatever changed: its old samples go
        sources.forget_dropped(conn, plan.work)
        rows = []
        for work in plan.work:
            data = work.found.path.read_bytes()
            rows = parse(data.decode("utf-8-sig", "replace"), work.state.id, report)
            sources.save(conn, work, len(data), data.count(b"\n"))
        report.add("deleted", "previous table",
                   conn.execute("DELETE FROM deploy_durations_tiered").rowcount)
        conn.executemany(f"INSERT INTO deploy_durations_tiered VALUES ({', '.join('?' * 8)})",
                         rows)
        report.add("imported", "rows", len(rows))
    report.files_read = len(plan.work)
    report.files_replaced = len(plan.vanished) + len(plan.replaced)
