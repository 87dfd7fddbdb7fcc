"""What the WebSocket gateway knows of a device's seqs when it says its first hello.

The seq rules (ws_gateway) need the highest seq stored and the last RECENT_SEQS stored: read
from the device's raw log, the record of truth, or taken from what the gateway saved when it
last stopped cleanly, while that still holds for the log.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..rawlog import log_files
from ..toolchain.publish import write_atomic
from .ws_format import WsLine

log = logging.getLogger(__name__)
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


# --- saved at a clean shutdown

# In var_dir: every device's seqs as the gateway held them when it stopped cleanly. At 66 ms a
# device (10,000 lines parsed), a fleet of a thousand reconnecting after a restart waited about
# a minute for its last welcome; a saved device is ready at once.
SAVED_FILE = "ws_seqs.json"
SAVED_VERSION = 1


@dataclass(frozen=True)
class SavedSeqs:
    """A device's seqs saved at a clean shutdown, with the raw log they were true of: its
    newest file's name and size then. Only the gateway appends there, so while they match,
    the seqs are what the scan would read."""

    log: str
    size: int
    runs: tuple[tuple[int, int], ...]  # (first, last) of consecutive seqs, increasing

    def holds_for(self, device_dir: Path) -> bool:
        files = log_files(device_dir)
        return bool(files) and files[-1].name == self.log and files[-1].stat().st_size == self.size

    def seqs(self) -> list[int]:
        return [seq for first, last in self.runs for seq in range(first, last + 1)]

    @classmethod
    def of(cls, device_dir: Path, seqs: Iterable[int]) -> SavedSeqs | None:
        """The seqs with the device's newest raw log as it is now (None: it has none)."""
        files = log_files(device_dir)
        return cls(files[-1].name, files[-1].stat().st_size, _runs(seqs)) if files else None


def save(path: Path, saved: dict[str, SavedSeqs]) -> None:
    """Write the devices' saved seqs (renamed into place: never half a file)."""
    state = {"version": SAVED_VERSION,
             "devices": {device: {"log": s.log, "size": s.size, "seqs": s.runs}
                         for device, s in saved.items()}}
    # Not fsynced: a file lost or emptied by a crash is read as unreadable, and every log then.
    write_atomic(path, json.dumps(state, separators=(",", ":")))


def take_saved(path: Path) -> dict[str, SavedSeqs]:
    """The seqs saved at the last clean shutdown; the file is removed, so that after a crash
    from now on every device is read from its raw log again."""
    try:
        data = json.loads(path.read_bytes())
        if data["version"] != SAVED_VERSION:
            raise ValueError(f"not version {SAVED_VERSION}")
        saved = {device: _saved(entry) for device, entry in data["devices"].items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("%s unreadable (%s): every device's seqs are read from its raw log", path,
                    exc)
        saved = {}
    path.unlink(missing_ok=True)
    return saved


def _saved(entry: dict) -> SavedSeqs:
    log_name, size = entry["log"], entry["size"]
    runs = tuple((first, last) for first, last in entry["seqs"])
    if not isinstance(log_name, str) or type(size) is not int:
        raise ValueError("log is a file name, size an integer")
    if not all(type(a) is int and type(b) is int and a <= b for a, b in runs):
        raise ValueError("seq runs are [first, last] integers")
    if sum(last - first + 1 for first, last in runs) > RECENT_SEQS:
        raise ValueError(f"more than {RECENT_SEQS} seqs for a device")
    return SavedSeqs(log_name, size, runs)


def _runs(seqs: Iterable[int]) -> tuple[tuple[int, int], ...]:
    """Increasing seqs as (first, last) runs of consecutive ones (a device's are one or few)."""
    runs: list[list[int]] = []
    for seq in seqs:
        if runs and seq == runs[-1][1] + 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    return tuple((first, last) for first, last in runs)
