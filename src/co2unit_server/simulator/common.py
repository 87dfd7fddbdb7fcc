"""What the gateway simulators (`simulate-tcp`, `simulate-pull`, `simulate-ws`) share.

Their argument types, the directory a run keeps its gateway in, reading the gateway's
database back, and the figures and verdict of their summaries.
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from ..database import db

# How long a running gateway may take to store what it received (it stores in batches).
ROWS_WAIT_S = 30.0
RETRY_S = 0.25
DAY_S = 86400.0


# --- arguments -------------------------------------------------------------------------------

def integer(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from `low` to `high`."""

    def parse(raw: str) -> int:
        value = int(raw)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low}-{high}, got {raw}")
        return value

    return parse


def positive(high: float) -> Callable[[str], float]:
    """An argparse type: a number above 0 and at most `high`."""

    def parse(raw: str) -> float:
        value = float(raw)
        if not 0 < value <= high:
            raise argparse.ArgumentTypeError(f"must be above 0 and at most {high:g}, got {raw}")
        return value

    return parse


def duration(raw: str) -> float:
    """An argparse type: seconds, above 0 and at most a day."""
    return positive(DAY_S)(raw)


def share(raw: str) -> float:
    """An argparse type: a share, from 0 to 1."""
    value = float(raw)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {raw}")
    return value


def add_gateway_arguments(p: argparse.ArgumentParser, protocol: str,
                          var_dir_help: str = "with --port: the gateway's var dir "
                          "(db.sqlite3), to verify the result") -> None:
    """--host, --port, --remote-data, --var-dir: to run against a gateway already running."""
    p.add_argument("--host", default="127.0.0.1", help="the gateway (default: %(default)s)")
    p.add_argument("--port", type=integer(1, 65535),
                   help=f"the gateway's {protocol} port; without it, a gateway of its own is "
                   "started in a temp dir and stopped (SIGTERM) at the end")
    p.add_argument("--remote-data", type=Path,
                   help="with --port: the gateway's remote_data dir, to verify the result")
    p.add_argument("--var-dir", type=Path, help=var_dir_help)


@contextlib.contextmanager
def run_dir(keep: Path | None, prefix: str) -> Iterator[Path]:
    """`keep` (made if need be, kept), or a temporary directory removed afterwards."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


# --- what the gateway stored -----------------------------------------------------------------

def receipt_sources(conn: sqlite3.Connection, device: str) -> set[str]:
    """The raw log lines (sources) a device's gateway receipts are of."""
    return {source for (source,) in conn.execute(
        "SELECT source FROM gateway_receipts WHERE device = ?", (device,))}


@dataclass
class RunVerification:
    """What the raw logs and the table say about a run (each simulator adds its own counts)."""

    problems: list[str] = field(default_factory=list)
    lines: int = 0
    rows_expected: int = 0
    rows_found: int = 0


Checked = TypeVar("Checked", bound=RunVerification)


def read_db(db_path: Path, problems: list[str],
            check: Callable[[sqlite3.Connection], None]) -> None:
    """Run `check` on the database, read-only; one that cannot be opened or read is a problem."""
    try:
        conn = db.connect_readonly(db_path)
    except sqlite3.Error as exc:
        problems.append(f"cannot open {db_path}: {exc}")
        return
    try:
        check(conn)
    except sqlite3.Error as exc:
        problems.append(f"cannot read {db_path}: {exc}")
    finally:
        conn.close()


def until_stored(verify: Callable[[], Checked], settled: Callable[[], bool] = lambda: False,
                 wait_s: float = ROWS_WAIT_S) -> Checked:
    """verify(), again until it passes, `settled()` (no wait can help) or `wait_s` is up."""
    deadline = time.monotonic() + wait_s
    while True:
        result = verify()
        if not result.problems or settled() or time.monotonic() >= deadline:
            return result
        time.sleep(RETRY_S)


# --- the summary -----------------------------------------------------------------------------

def percentile(values: list[float], fraction: float) -> float:
    """The value `fraction` of the way up the sorted values (0.0 for none)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def counts_text(counts: Mapping) -> str:
    """'a 2, b 1': every key and its count, in the order of the keys as text."""
    return ", ".join(f"{key} {n}" for key, n in sorted(counts.items(), key=lambda kv: str(kv[0])))


def verdict_lines(problems: list[str], passed: bool, shown: int = 10) -> list[str]:
    """The end of a run's summary: its first `shown` problems, then PASS or FAIL."""
    lines = [f"problem: {p}" for p in problems[:shown]]
    if len(problems) > shown:
        lines.append(f"... and {len(problems) - shown} more problems")
    lines.append("PASS" if passed else f"FAIL ({len(problems)} problems)")
    return lines
