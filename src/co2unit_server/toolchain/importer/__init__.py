"""Incremental import of what units and servers wrote into the SQLite database.

Stages: readings, error logs, pings, deployments. Each prints one progress line and logs its
counts per outcome and reason in `import_log`; nothing is dropped without being counted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .deployments import import_deployments
from .errorlogs import import_errors
from .pings import import_pings
from .readings import import_readings
from .report import StageReport

STAGES = ("readings", "errors", "pings", "deployments")


@dataclass(frozen=True)
class Sources:
    """Where the importer reads from (the Makefile's DATA_DIR, DB_DIR and deployments file)."""

    data_dir: Path
    db_dir: Path
    deployments_tsv: Path


def run_import(conn: sqlite3.Connection, src: Sources, out: Callable[[str], None] = print,
               stages: tuple[str, ...] = STAGES) -> dict[str, StageReport]:
    """Run the import stages in order; return their reports."""
    run_ts = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    steps = {
        "readings": lambda r: import_readings(conn, src.data_dir, r),
        "errors": lambda r: import_errors(conn, src.data_dir, r),
        "pings": lambda r: import_pings(conn, src.data_dir, src.db_dir, r),
        "deployments": lambda r: import_deployments(conn, src.deployments_tsv, r),
    }
    reports = {}
    for stage in stages:
        report = StageReport(stage)
        steps[stage](report)
        report.finish(conn, run_ts, out)
        reports[stage] = report
    return reports
