"""Counting what happened to every source line, printing it, and logging it in import_log."""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ...database.state import transaction

DROPPED_SAMPLE_CHARS = 200
# Outcomes whose reasons are listed on the progress line, in this order; the second kind
# only when they happened.
_ALWAYS = ("recovered", "dropped", "nulled")
_WHEN_ANY = ("updated", "inferred", "noted")


@dataclass
class StageReport:
    """What one import stage did: counts per (outcome, reason), files read, time taken."""

    stage: str
    counts: Counter = field(default_factory=Counter)
    files: int = 0
    files_read: int = 0
    files_replaced: int = 0
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0
    note: str = ""
    dropped_lines: list[tuple[int, int, str, str]] = field(default_factory=list)
    lost_by_unit: Counter = field(default_factory=Counter)  # dropped lines per unit
    units: set[str] = field(default_factory=set)  # units whose files were read or forgotten

    def add(self, outcome: str, reason: str, count: int = 1) -> None:
        self.counts[(outcome, reason)] += count

    def drop(self, file_id: int, line_no: int, reason: str, content: str,
             outcome: str = "dropped") -> None:
        """Count a dropped (or recovered) line and keep a sample for the dropped_lines table."""
        self.add(outcome, reason)
        sample = repr(content[:DROPPED_SAMPLE_CHARS])
        self.dropped_lines.append((file_id, line_no, f"{outcome}: {reason}", sample))

    def total(self, outcome: str) -> int:
        return sum(n for (o, _), n in self.counts.items() if o == outcome)

    def _reasons(self, outcome: str) -> str:
        reasons = sorted((r, n) for (o, r), n in self.counts.items() if o == outcome and n)
        return ", ".join(f"{r}: {n}" for r, n in reasons)

    def line(self) -> str:
        """The one progress line of this stage."""
        parts = [f"{self.stage}: {self.files} files ({self.files_read} read, "
                 f"{self.files_replaced} replaced or gone)",
                 f"{self.total('imported')} new rows", f"{self.total('duplicate')} duplicates"]
        if self.total("deleted"):
            parts.append(f"{self.total('deleted')} rows deleted ({self._reasons('deleted')})")
        for outcome in _ALWAYS + tuple(o for o in _WHEN_ANY if self.total(o)):
            detail = self._reasons(outcome)
            parts.append(f"{self.total(outcome)} {outcome}" + (f" ({detail})" if detail else ""))
        text = ", ".join(parts) + f" in {self.seconds:.2f} s"
        if self.lost_by_unit:
            units = sorted(self.lost_by_unit.items(), key=lambda u: (-u[1], u[0]))
            text += (f"; rows lost by {len(units)} unit{'s' if len(units) > 1 else ''}: "
                     + ", ".join(f"{unit} {n}" for unit, n in units))
        return text + (f"; {self.note}" if self.note else "")

    def store_dropped(self, conn: sqlite3.Connection) -> None:
        """Insert the dropped lines kept so far, in the caller's transaction, and forget them."""
        conn.executemany("INSERT INTO dropped_lines VALUES (?, ?, ?, ?)", self.dropped_lines)
        self.dropped_lines.clear()

    def finish(self, conn: sqlite3.Connection, run_ts: str, out: Callable[[str], None]) -> None:
        """Print the progress line and store the counts and dropped lines."""
        self.seconds = time.monotonic() - self.started
        out(self.line())
        rows = [(run_ts, self.stage, o, r, n) for (o, r), n in sorted(self.counts.items()) if n]
        if self.files_read or self.files_replaced:
            rows.append((run_ts, self.stage, "files", "read", self.files_read))
            rows.append((run_ts, self.stage, "files", "replaced or gone", self.files_replaced))
        with transaction(conn):
            conn.executemany("INSERT INTO import_log VALUES (?, ?, ?, ?, ?)", rows)
            self.store_dropped(conn)
