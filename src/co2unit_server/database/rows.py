"""The rows the gateways write: a measured value, and what one raw log line amounted to.

Apart from measurement_store, which reads and writes them, so that the formats that make
them and the writer process that stores them need nothing else of the database."""

from __future__ import annotations

from typing import NamedTuple

# What a raw log line amounted to. ok: parsed and stored; partial: stored, some values
# unusable; unknown: valid, no parser yet; bad: kept but not parsed (malformed packet, non-200,
# not JSON); failed: no answer at all.
VERDICTS = ("ok", "partial", "unknown", "bad", "failed")
REFUSED = ("bad", "failed")


class Measurement(NamedTuple):
    """One value of one device at one time (a row of `measurements`).

    A named tuple, not a dataclass: it is the row already. The store takes plain tuples of
    these fields as well, which the gateways make: the TCP gateway 90 rows a packet at a third
    of the cost, and a plain tuple goes to the store writer at a quarter of a named one's."""

    device: str
    family: str
    ts: str  # UTC 'YYYY-MM-DDTHH:MM:SS.ffffff'
    name: str
    value: float
    source: str  # the raw log line it came from
    session: str | None = None  # the streaming session it arrived in (ws devices)


class Receipt(NamedTuple):
    """What one raw log line (a packet or a poll) amounted to (a row of `gateway_receipts`).

    A named tuple: made for each WebSocket message, a frozen dataclass cost four times as much."""

    source: str
    device: str
    family: str
    ts: str
    verdict: str  # VERDICTS
    stored: int  # values stored from it
    expected_s: float | None  # when the device's next packet or poll is due
    detail: str

    def row(self) -> tuple:
        """The table's row: a plain tuple, with no detail as NULL."""
        return (*self[:7], self.detail or None)
