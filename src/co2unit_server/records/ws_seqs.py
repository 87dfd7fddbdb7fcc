"""What the WebSocket gateway knows of a device's seqs when it says its first hello.

The seq rules (ws_gateway) need, of the device's current sequence of seqs, the last RECENT_SEQS
stored (ending with the highest), the newest time of a value stored under them, and the first seq
of the device's latest connection: read from the device's raw log, the record of truth, or
taken from what the gateway saved when it last stopped cleanly, while that still holds for the
log.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..core.files import write_atomic
from .rawlog import log_files
from .ws_format import WsLine, utc_text

log = logging.getLogger(__name__)
RECENT_SEQS = 10_000  # stored seqs remembered per device: a resend older than these is refused


@dataclass(frozen=True)
class SeqState:
    """A device's current sequence as the seq rules need it."""

    seqs: tuple[int, ...] = ()  # the newest stored, oldest first: they end with the highest
    newest: str | None = None  # the newest time (UTC text) of a value stored under them
    floor: int | None = None  # the first seq of the device's latest connection


def read_state(device_dir: Path, keep: int = RECENT_SEQS) -> SeqState:
    """The device's current sequence as its raw logs hold it: the newest `keep` readable lines
    back to the one that began the sequence (marked `new_sequence`).

    Within a sequence the gateway appends a seq only above every seq stored before it, so the
    seqs end with the highest. An unreadable line (torn by a crash, edited) is passed over."""
    lines: list[WsLine] = []  # newest first
    for line in _lines_backwards(device_dir):
        lines.append(line)
        if line.new_sequence or len(lines) >= keep:
            break
    if not lines:
        return SeqState()
    newest = max(filter(None, map(_newest_value, lines)), default=None)
    return SeqState(tuple(line.seq for line in reversed(lines)), newest, _floor(lines))


def _lines_backwards(device_dir: Path) -> Iterator[WsLine]:
    for path in reversed(log_files(device_dir)):
        # The last piece is "" or a line being written (torn): only whole lines count.
        for raw in reversed(path.read_bytes().split(b"\n")[:-1]):
            try:
                yield WsLine.parse(raw)
            except ValueError:
                continue


def _newest_value(line: WsLine) -> str | None:
    """The newest time of a value in a line's message (None: it has none, or was edited into
    nonsense). Its times only: the gateway checked the rest before it wrote the line
    (check_readings doubled the scan's time)."""
    try:
        return max((utc_text(reading["ts"]) for reading in json.loads(line.raw)["readings"]
                    if reading["values"]), default=None)
    except (ValueError, KeyError, TypeError):
        return None


def _floor(lines: list[WsLine]) -> int:
    """The first seq logged from the connection of the newest line (by its peer address: a
    new connection comes from another port), of lines newest first."""
    floor = lines[0].seq
    for line in lines:
        if line.peer != lines[0].peer:
            break
        floor = line.seq
    return floor


# --- saved at a clean shutdown

# In var_dir: every device's seqs as the gateway held them when it stopped cleanly. At 66 ms a
# device (10,000 lines parsed), a fleet of a thousand reconnecting after a restart waited about
# a minute for its last welcome; a saved device is ready at once.
SAVED_FILE = "ws_seqs.json"
SAVED_VERSION = 2  # 2: with the newest reading and the floor (version 1: seqs only)


@dataclass(frozen=True)
class SavedSeqs:
    """A device's SeqState saved at a clean shutdown, with the raw log it was true of: its
    newest file's name and size then. Only the gateway appends there, so while they match,
    the state is what the scan would read."""

    log: str
    size: int
    runs: tuple[tuple[int, int], ...]  # (first, last) of consecutive seqs, increasing
    newest: str | None = None
    floor: int | None = None

    def holds_for(self, device_dir: Path) -> bool:
        files = log_files(device_dir)
        return bool(files) and files[-1].name == self.log and files[-1].stat().st_size == self.size

    def state(self) -> SeqState:
        seqs = tuple(seq for first, last in self.runs for seq in range(first, last + 1))
        return SeqState(seqs, self.newest, self.floor)

    @classmethod
    def of(cls, device_dir: Path, state: SeqState) -> SavedSeqs | None:
        """The state with the device's newest raw log as it is now (None: it has none)."""
        files = log_files(device_dir)
        if not files:
            return None
        return cls(files[-1].name, files[-1].stat().st_size, _runs(state.seqs), state.newest,
                   state.floor)


def save(path: Path, saved: dict[str, SavedSeqs]) -> None:
    """Write the devices' saved seqs (renamed into place: never half a file)."""
    state = {"version": SAVED_VERSION,
             "devices": {device: {"log": s.log, "size": s.size, "seqs": s.runs,
                                  "newest": s.newest, "floor": s.floor}
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
    log_name, size, newest, floor = entry["log"], entry["size"], entry["newest"], entry["floor"]
    runs = tuple((first, last) for first, last in entry["seqs"])
    if not isinstance(log_name, str) or type(size) is not int:
        raise ValueError("log is a file name, size an integer")
    if not isinstance(newest, str | None) or not (floor is None or type(floor) is int):
        raise ValueError("newest is a time or null, floor a seq or null")
    if not all(type(a) is int and type(b) is int and a <= b for a, b in runs):
        raise ValueError("seq runs are [first, last] integers")
    if sum(last - first + 1 for first, last in runs) > RECENT_SEQS:
        raise ValueError(f"more than {RECENT_SEQS} seqs for a device")
    return SavedSeqs(log_name, size, runs, newest, floor)


def _runs(seqs: Iterable[int]) -> tuple[tuple[int, int], ...]:
    """Increasing seqs as (first, last) runs of consecutive ones (a device's are one or few)."""
    runs: list[list[int]] = []
    for seq in seqs:
        if runs and seq == runs[-1][1] + 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    return tuple((first, last) for first, last in runs)
