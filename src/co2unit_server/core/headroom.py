"""Free space against the `min_free_bytes` floor: the one check every writer of new data shares.

Unit pushes (507), the WebSocket gateway (STORAGE_FULL, close 1013), the TCP gateway (stops
listening) and the pull collector (pauses) take no new data while the filesystem they write
to has less than the floor free. The floor is the room left for what is already on its way
(a packet read, a batch being written, the units' pings), so nothing already taken is refused
half-way.

Each component logs one line (per process) when it finds the disk full and one when it finds
room again, never one per refusal: a full disk is a state, and a line a message would be a
storm of its own.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger(__name__)

RECHECK_S = 1.0  # statvfs at most once a second: a message is bytes, the floor megabytes
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def free_bytes(path: str | Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem of `path` (of its
    nearest existing parent while it is not made yet)."""
    path = Path(path)
    while not path.exists() and path.parent != path:
        path = path.parent
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def no_space(exc: BaseException) -> bool:
    """Whether an error says the disk (or the quota) is full."""
    return isinstance(exc, OSError) and exc.errno in NO_SPACE


class Storage(NamedTuple):
    """One directory new data goes to, as /metrics and `check` show it."""

    path: Path
    free: int
    full: bool  # below min_free_bytes


def storage(config: Config) -> list[Storage]:
    """remote_data (pushes, the gateways' raw logs) and var (pings, the database), each
    against min_free_bytes; a path given twice is shown once."""
    paths = dict.fromkeys((config.remote_data_dir, config.var_dir))
    shown = []
    for path in paths:
        free = free_bytes(path)
        shown.append(Storage(path, free, free < config.min_free_bytes))
    return shown


def storage_alarms(config: Config) -> list[str]:
    """`check` lines for the directories below min_free_bytes (none: no alarm)."""
    return [f"STORAGE FULL {s.path}: {s.free} bytes free, below min_free_bytes "
            f"({config.min_free_bytes}): new data is refused" for s in storage(config) if s.full]


class Headroom:
    """One component's view of one filesystem: full (below the floor) or not, looked at
    once a RECHECK_S at most; logs each change of state once."""

    def __init__(self, path: str | Path, min_free_bytes: int, component: str) -> None:
        self.path = str(path)
        self.min_free_bytes = min_free_bytes
        self.component = component
        self.is_full = False
        self.free = 0
        self._checked_at = float("-inf")

    def full(self, needed: int = 0) -> bool:
        """True when writing `needed` more bytes would leave less than the floor free.

        The state (and its log line) follows the free space alone: one large write refused
        is not a full disk."""
        now = time.monotonic()
        if now - self._checked_at > RECHECK_S:
            # Free space first, then the time: a thread that sees the new time sees the new
            # space, never the 0 a first look starts from (a 507 to a unit on a roomy disk).
            self.free = free_bytes(self.path)
            self._checked_at = now
        self._set(self.free < self.min_free_bytes)
        return self.free - needed < self.min_free_bytes

    def filled(self) -> None:
        """A write failed for want of space: full now, whatever statvfs said a moment ago."""
        self._checked_at = time.monotonic()
        self.free = min(self.free, free_bytes(self.path))
        self._set(True)

    def wrote(self) -> None:
        """A write went through: no longer full, for a writer that has no floor of its own
        (one that writes into the floor's room, as the alive pings do)."""
        if self.is_full:
            self.free = free_bytes(self.path)
            self._set(False)

    def _set(self, full: bool) -> None:
        if full == self.is_full:
            return
        self.is_full = full
        if full:
            log.error("%s: storage full: %d bytes free on %s (floor %d): no new data is "
                      "taken until there is room", self.component, self.free, self.path,
                      self.min_free_bytes)
        else:
            log.warning("%s: storage recovered: %d bytes free on %s: taking new data again",
                        self.component, self.free, self.path)
