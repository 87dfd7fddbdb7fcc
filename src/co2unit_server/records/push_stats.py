"""The push_daily row of one acknowledged chunk: new bytes, error entries, newest reading.

Runs on every pushed chunk, so each figure comes from a few byte scans of the chunk: no
parsing of whole files, no database work in the request (a BatchWriter inserts the row).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from ..database.db_writer import BatchWriter
from .pushstore import Stored
from .readings import HW_PREFIX, parse_line

log = logging.getLogger(__name__)

HEADLINE = b"\n----- "  # an error-log entry's headline, at the start of a line
# Lines tried from the end of a readings chunk: firmware of 2019-07-26 wrote a blank line
# after each row, and the last line may be damaged.
READING_TRIES = 4
# Enough stored bytes before a chunk to hold the start of a readings line it completes.
LINE_BYTES = 512
_PREFIX = HW_PREFIX.encode()


def error_entries(stored: Stored) -> int:
    """Error-log headlines whose marker ends in the new bytes (a file's start is a line start).

    A headline cut between two chunks is counted by the one that completes its marker; the
    stored bytes before are read only when the new ones could be such a completion.
    """
    new, width = stored.new, len(HEADLINE) - 1
    count = new.count(HEADLINE)
    if new[:1] in (b"-", b" "):  # it may complete a marker begun in the stored bytes
        lead = stored.before(width)
        if stored.start < width:
            lead = b"\n" + lead
        count += (lead + new[:width]).count(HEADLINE) - lead.count(HEADLINE)
    return count


def last_reading(chunk: bytes) -> str | None:
    """'YYYY-MM-DD HH:MM:SS' of the last complete line of a readings chunk that is a reading."""
    end = chunk.rfind(b"\n")
    for _ in range(READING_TRIES):
        if end < 0:
            return None
        start = chunk.rfind(b"\n", 0, end) + 1
        line = chunk[start:end]
        if line.startswith(_PREFIX):
            fields = parse_line(line.decode("utf-8", "surrogateescape"))[0]
            if fields is not None:
                return f"{fields[2]} {fields[3]}"
        end = start - 1
    return None


def newest_reading(stored: Stored) -> str | None:
    """The last reading the new bytes complete (its line may have begun in stored bytes)."""
    found = last_reading(stored.new)
    if found is None and stored.start and b"\n" in stored.new:
        # A short final chunk of a cycle may complete just one line, begun in the last chunk.
        found = last_reading(stored.before(LINE_BYTES) + stored.new)
    return found


def push_row(hw_id: str, segments: Sequence[str], stored: Stored, now: datetime) -> tuple:
    """The push_daily parameters of one acknowledged chunk (db.UPSERT_PUSH_DAILY)."""
    errors = error_entries(stored) if segments[0] == "errors" else 0
    reading = newest_reading(stored) if segments[:2] == ["data", "readings"] else None
    stamp = now.replace(tzinfo=None).isoformat(timespec="seconds")  # YYYY-MM-DDTHH:MM:SS
    return (hw_id, stamp[:10], len(stored.new), 1, errors, stamp, reading)


def record(writer: BatchWriter, hw_id: str, segments: Sequence[str], stored: Stored) -> None:
    """Queue the chunk's row; never raises (the chunk is stored and must be acknowledged)."""
    try:
        writer.submit(push_row(hw_id, list(segments), stored, datetime.now(UTC)))
    except Exception:
        log.exception("push statistics of %s/%s lost", hw_id, "/".join(segments))
