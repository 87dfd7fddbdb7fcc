"""What the WebSocket gateway knows of a device's seqs when it says its first hello.

The seq rules (ws_gateway) need the highest seq stored and the last RECENT_SEQS stored: read
from the device's raw log, the record of truth.
"""

from __future__ import annotations

from pathlib import Path

from ..rawlog import log_files
from .ws_format import WsLine

RECENT_SEQS = 10_000  # stored seqs remembered per device: a resend older than these is refused


def stored_seqs(device_dir: Path, keep: int = RECENT_SEQS) -> list[int]:
    """The seqs of the newest `keep` readable lines of a device's raw logs, oldest first.

    The gateway appends a seq only above every seq stored before it, so these end with the
    highest. An unreadable line (torn by a crash, edited) is passed over."""
    seqs: list[int] = []
    for path in reversed(log_files(device_dir)):
        # The last piece is "" or a line being written (torn): only whole lines count.
        for raw in reversed(path.read_bytes().split(b"\n")[:-1]):
            try:
                seqs.append(WsLine.parse(raw).seq)
            except ValueError:
                continue
            if len(seqs) >= keep:
                return seqs[::-1]
    return seqs[::-1]
