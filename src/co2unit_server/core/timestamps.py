"""Timestamps as the toolchain handles them: ISO text in, naive UTC out."""

from __future__ import annotations

from datetime import UTC, datetime

DAY = 86400.0


def utc_datetime(raw: str) -> datetime:
    """An ISO date or date-time as naive UTC (an offset is converted; none means UTC)."""
    ts = datetime.fromisoformat(raw)
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC).replace(tzinfo=None)
    return ts


def to_epoch(raw: str) -> float:
    """Seconds since 1970 of an ISO date or date-time (UTC unless it says otherwise)."""
    return utc_datetime(raw).replace(tzinfo=UTC).timestamp()
