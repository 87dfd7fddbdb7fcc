"""Incremental import of what units and servers wrote into the SQLite database.

Stages: readings, error logs, pings, gateway measurements (with the streaming sessions),
deployments. Each prints one progress line and logs its counts per outcome and reason in
`import_log`; nothing is dropped without being counted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ...core.config import Config
from .deployments import import_deployments
from .errorlogs import import_errors
from .measurements import import_measurements
from .pings import import_pings
from .readings import import_readings
from .report import StageReport
from .sessions import import_sessions

STAGES = ("readings", "errors", "pings", "measurements", "deployments")


@dataclass(frozen=True)
class Sources:
    """Where the importer reads from (the Makefile's DATA_DIR, DB_DIR and deployments file),
    and the record formats of the TCP devices (the tcp_device_types setting)."""

    data_dir: Path
    db_dir: Path
    deployments_tsv: Path
    tcp_device_types: tuple[str, ...] = Config.tcp_device_types  # the setting's default


def run_import(conn: sqlite3.Connection, src: Sources, out: Callable[[str], None] = print,
               stages: tuple[str, ...] = STAGES) -> dict[str, StageReport]:
    """Run the import stages in order; return their reports."""
    run_ts = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    steps = {
        "readings": lambda r: import_readings(conn, src.data_dir, r),
        "errors": lambda r: import_errors(conn, src.data_dir, r),
        "pings": lambda r: import_pings(conn, src.data_dir, src.db_dir, r),
        "measurements": lambda r: (
            import_measurements(conn, src.data_dir, src.tcp_device_types, r),
            import_sessions(conn, src.data_dir, r)),  # the sessions its rows are tagged with
        "deployments": lambda r: import_deployments(conn, src.deployments_tsv, r),
    }
    reports = {}
    for stage in stages:
        report = StageReport(stage)
        steps[stage](report)
        report.finish(conn, run_ts, out)
        reports[stage] = report
    return reports
