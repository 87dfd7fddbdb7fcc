"""The streaming sessions' log (remote_data/sessions/sessions.log) into the `sessions` table.

Run with the measurements stage, whose rows carry the session ids. The log holds two short
lines per session, so it is read whole every time rather than tracked in import_files: the
gateway writes the table too, and reading the same log with the same `fold` gives the same
rows, so a table lost or rebuilt from the files alone comes back complete.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ...database.state import transaction
from ...records import sessions
from .report import StageReport


def import_sessions(conn: sqlite3.Connection, data_dir: Path, report: StageReport) -> None:
    """Add the log's sessions and stop times that the table lacks; count the rest."""
    records, unreadable = sessions.read_log(sessions.log_path(data_dir))
    found, misfits = sessions.fold(records)
    with transaction(conn):
        inserted, stamped = sessions.store(conn, found.values())
    report.add("imported", "sessions", inserted)
    report.add("updated", "sessions stopped since", stamped)
    report.add("duplicate", "sessions already in (live from the gateway)",
               len(found) - inserted - stamped)
    report.add("dropped", "unreadable session log line (torn or edited)", unreadable)
    report.add("dropped", "session log line that fits no session (a stop without its start)",
               misfits)
