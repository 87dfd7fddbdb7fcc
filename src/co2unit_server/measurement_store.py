"""The measurement store: where the gateways put parsed values, and where pages read them.

The gateways only call `open_store(config)` and `MeasurementStore.add`: a second database
engine is a second class here, nothing else changes. SQLite writes go through a writer thread
(as pings do), after the raw log line they come from is durable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from . import db
from .config import Config
from .db_writer import BatchWriter


@dataclass(frozen=True)
class Measurement:
    """One value of one device at one time (a row of `measurements`)."""

    device: str
    family: str
    ts: str  # UTC 'YYYY-MM-DDTHH:MM:SS.ffffff'
    name: str
    value: float
    source: str  # the raw log line it came from

    def row(self) -> tuple:
        return (self.device, self.family, self.ts, self.name, self.value, self.source)


@dataclass(frozen=True)
class Receipt:
    """What one raw log line (a packet or a poll) amounted to (a row of `gateway_receipts`)."""

    source: str
    device: str
    family: str
    ts: str
    verdict: str  # rawlog.VERDICTS
    stored: int  # values stored from it
    expected_s: float | None  # when the device's next packet or poll is due
    detail: str

    def row(self) -> tuple:
        return (self.source, self.device, self.family, self.ts, self.verdict, self.stored,
                self.expected_s, self.detail or None)


class MeasurementStore(Protocol):
    def add(self, receipt: Receipt, measurements: Sequence[Measurement]) -> None:
        """Queue a receipt and its values; never raises for a database problem (it is logged)."""

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued is written (or given up); False on timeout."""


class SqliteMeasurementStore:
    """The `measurements` and `gateway_receipts` tables of var/db.sqlite3."""

    def __init__(self, config: Config) -> None:
        lost = "in the raw log (the next import stores them) but not in"
        self._values = BatchWriter(config.db_path, config.db_busy_timeout_ms,
                                   db.INSERT_MEASUREMENT, "measurement", lost, unit_at=0)
        self._receipts = BatchWriter(config.db_path, config.db_busy_timeout_ms,
                                     db.INSERT_RECEIPT, "gateway receipt", lost, unit_at=1)

    def add(self, receipt: Receipt, measurements: Sequence[Measurement]) -> None:
        if measurements:
            self._values.submit_many([m.row() for m in measurements])
        self._receipts.submit(receipt.row())

    def flush(self, timeout: float = 10.0) -> bool:
        return self._values.flush(timeout) and self._receipts.flush(timeout)


def open_store(config: Config) -> MeasurementStore:
    """The store the settings name (SQLite, the embedded default, is the one there is)."""
    return SqliteMeasurementStore(config)
