"""Error logs (`<unit>/errors/*.txt`, also under `superseded/`) into error_logs.

An entry is a headline `----- <date> <LEVEL> <message>` and the lines up to the next headline
(a traceback). Since a pushed log may still grow, the last entry of a file is imported as it is
and read again, from its headline, when the file grows.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from ...database.state import transaction
from . import sources
from .report import StageReport

KIND = "errors"
_HEADLINE = re.compile(
    r"----- (?:\(\s*(\d{4}),\s*(\d+),\s*(\d+),\s*(\d+),\s*(\d+),\s*(\d+)(?:,\s*-?\d+)*\s*\)"
    r"|(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d))\s+(\S+)\s*(.*)")
# (etype, lower-case text that marks it in the headline message), first match wins.
ETYPES = (("uncaught", "uncaught"), ("watchdog", "watchdog"), ("signal", "signal quality"),
          ("backoff", "backoff"), ("transmit", "transmit"))
INSERT = ("INSERT INTO error_logs (unit_id, idate, itime, etype, odate, otime, level, message,"
          " src_file, src_line) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def classify(message: str) -> str | None:
    """The etype of a headline message, or None for anything else."""
    text = message.lower()
    return next((etype for etype, marker in ETYPES if marker in text), None)


def headline(line: str) -> tuple[str, str, str, str] | None:
    """(odate, otime, level, message) of a headline in either date format, else None."""
    m = _HEADLINE.fullmatch(line)
    if m is None:
        return None
    if m.group(7):
        odate, otime = m.group(7), m.group(8)
    else:
        y, mo, d, h, mi, s = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
        odate, otime = f"{y:04d}-{mo:02d}-{d:02d}", f"{h:02d}:{mi:02d}:{s:02d}"
    return odate, otime, m.group(9), m.group(10)


class EntryParser:
    """Turns the lines of one file into error_logs rows, carrying the last good date."""

    def __init__(self, unit_id: str, file_id: int, carry: str | None,
                 report: StageReport) -> None:
        self.unit_id = unit_id
        self.file_id = file_id
        self.carry = carry  # 'YYYY-MM-DD HH:MM:SS' of the last entry with a real date
        self.report = report
        self.entries: list[list] = []

    def feed(self, line: str, line_no: int) -> bool:
        """Add one line; True when it starts an entry."""
        if "\x00" in line:
            self.report.add("nulled", "NUL bytes removed")
            line = line.replace("\x00", "")
        parsed = headline(line)
        if parsed is not None:
            odate, otime, level, message = parsed
            if odate.startswith("1970-"):
                # The clock was lost: the best we know is the last good date before it.
                idate, itime = self.carry.split(" ") if self.carry else (None, None)
                self.report.add("nulled" if self.carry is None else "inferred",
                                "1970 date, no earlier good date" if self.carry is None
                                else "date from the last good entry")
            else:
                idate, itime = odate, otime
                self.carry = f"{odate} {otime}"
            self.entries.append([self.unit_id, idate, itime, classify(message), odate, otime,
                                 level, [message], self.file_id, line_no])
            return True
        if not self.entries:
            # Continuation of an entry in an earlier file: kept as an entry of its own.
            idate, itime = self.carry.split(" ") if self.carry else (None, None)
            self.report.add("nulled", "continuation lines without a headline")
            self.entries.append([self.unit_id, idate, itime, None, None, None, None, [line],
                                 self.file_id, line_no])
            return False
        self.entries[-1][7].append(line)
        return False

    def rows(self) -> list[list]:
        return [e[:7] + ["\n".join(e[7]).rstrip()] + e[8:] for e in self.entries]


def import_file(conn: sqlite3.Connection, work: sources.Work, carry: str | None,
                report: StageReport) -> str | None:
    """Import one file's new entries (re-reading its last one); return the carry at its end."""
    data, start = sources.read_new(work)
    first = 1 if work.restart else work.state.lines_done + 1
    parser = EntryParser(work.found.group, work.state.id, carry, report)
    offset, resume = start, (start + len(data), first - 1 + data.count(b"\n"))
    for line_no, raw in enumerate(data.split(b"\n")[:-1], first):
        if parser.feed(raw.decode("utf-8", "replace"), line_no):
            resume = (offset, line_no - 1)
        offset += len(raw) + 1
    rows = parser.rows()
    with transaction(conn):
        before = conn.total_changes
        # The entry read last time is read again, now with the lines that followed it.
        conn.execute("DELETE FROM error_logs WHERE src_file = ? AND src_line >= ?",
                     (work.state.id, first))
        reread = conn.total_changes - before
        conn.executemany(INSERT, rows)
        sources.save(conn, work, resume[0], resume[1], parser.carry)
    report.add("imported", "entries", len(rows) - reread)
    return parser.carry


def import_errors(conn: sqlite3.Connection, data_dir: Path, report: StageReport) -> None:
    """Import the new entries of every error log, in file order per directory."""
    found = sources.find_files(data_dir, "data", sources.unit_dirs(data_dir, "errors"), ".txt")
    report.files = len(found)
    with transaction(conn):
        plan = sources.plan(conn, KIND, found)
        gone = plan.replaced + plan.vanished
        before = conn.total_changes
        conn.executemany("DELETE FROM error_logs WHERE src_file = ?", [(s.id,) for s in gone])
        report.add("deleted", "file replaced or gone", conn.total_changes - before)
        sources.forget(conn, plan.vanished)
        sources.forget_dropped(conn, plan.work)
    report.files_replaced = len(gone)
    work = {w.found.key: w for w in plan.work}
    unchanged = {f.key: state for f, state in plan.unchanged}
    carry_by_dir: dict[Path, str | None] = {}
    for f in found:
        directory = f.path.parent
        if f.key in unchanged:
            carry_by_dir[directory] = unchanged[f.key].carry
            continue
        w = work[f.key]
        carry = carry_by_dir.get(directory) if w.restart else w.state.carry
        carry_by_dir[directory] = import_file(conn, w, carry, report)
    report.files_read = len(plan.work)
