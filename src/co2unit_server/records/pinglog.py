"""The alive-ping log: var/pings/pings-NNNN.tsv (the record of truth) and the `pings` table."""

from __future__ import annotations

import errno
import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..core.errors import ApiError, ErrorCode
from ..core.headroom import Headroom, no_space
from ..core.locking import file_lock
from ..database.db_writer import BatchWriter

log = logging.getLogger(__name__)

PING_FILE_RE = re.compile(r"pings-(\d{4,})\.tsv")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
TAIL_BLOCK = 8192


@dataclass(frozen=True)
class Ping:
    ts: datetime  # UTC, naive, as the reference wrote it
    hw_id: str
    site_code: str | None
    rssi_raw: int | None = None
    rssi_dbm: int | None = None
    ber_raw: int | None = None

    @property
    def ts_text(self) -> str:
        # Always with microseconds (isoformat() drops them by default when zero): the
        # importer's key.
        return self.ts.isoformat(timespec="microseconds")

    def tsv_line(self) -> str:
        """ts, hw_id, site_code, rssi_raw, rssi_dbm, ber_raw; missing values as `None`."""
        fields = [self.ts_text, self.hw_id, self.site_code, self.rssi_raw, self.rssi_dbm,
                  self.ber_raw]
        # A nickname is free text: a tab or newline in it must not break the TSV.
        return "\t".join(_CONTROL.sub(" ", str(f)) for f in fields) + "\n"

    def db_row(self) -> tuple:
        nickname = None if self.site_code in (None, "None") else self.site_code
        ts_text = self.ts_text
        return (ts_text, ts_text[:10], ts_text[11:19], self.hw_id, nickname, self.rssi_raw,
                self.rssi_dbm, self.ber_raw)


INSERT_PING = """INSERT OR IGNORE INTO pings
    (ping_ts, ping_date, ping_time, unit_id, nickname, rssi_raw, rssi_dbm, ber_raw)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?)"""


def _append_line(path: Path, line: bytes) -> None:
    # One write() with O_APPEND: the line lands whole at the end.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        written = os.write(fd, line)
        if written != len(line):
            _take_back(fd, written)
            raise OSError(errno.ENOSPC, f"{written} of {len(line)} bytes written", str(path))
    finally:
        os.close(fd)


def _take_back(fd: int, written: int) -> None:
    """Cut off the part of a line a full disk let through: else it would be answered 507 yet
    be half in the log, and the next line glued to it. Only while it is still the file's end
    (another process's line after it stays; on a full disk that is all but impossible)."""
    end = os.lseek(fd, 0, os.SEEK_CUR)  # O_APPEND: where this write ended
    if os.fstat(fd).st_size == end:
        os.ftruncate(fd, end - written)


def ping_files(pings_dir: Path) -> list[Path]:
    """The ping logs in sequence order."""
    try:
        names = [n for n in os.listdir(pings_dir) if PING_FILE_RE.fullmatch(n)]
    except FileNotFoundError:
        return []
    return [pings_dir / n for n in sorted(names, key=lambda n: int(n[6:-4]))]


class PingLog:
    """Appends pings to the rotating TSV log and hands them on to the `pings` table."""

    def __init__(self, pings_dir: Path, rotate_bytes: int, lock_path: Path, db_path: Path,
                 busy_timeout_ms: int) -> None:
        self.pings_dir = pings_dir
        self.rotate_bytes = rotate_bytes
        self.lock_path = lock_path
        # Inserting in the request cost a fifth of a ping's CPU and, with every thread of both
        # processes taking SQLite's write lock in turn, the slowest replies.
        self.table = BatchWriter(db_path, busy_timeout_ms, INSERT_PING, "ping",
                                 "in the TSV log but not in")
        self._current: Path | None = None  # the file this process appends to
        # Pings are a line each: they go into the floor's room (min_free_bytes 0 here), so
        # only a disk really full refuses them.
        self.headroom = Headroom(pings_dir, 0, "alive pings")

    def record(self, ping: Ping) -> None:
        """Append the ping to the TSV, then hand it to the table; failures are logged.

        A unit that gets anything but 200 for its ping ends its cycle without pushing its
        data, so a broken log must not cost it the day: only a full disk, where nothing can
        be stored and its pushes would get 507 too, is answered so (ApiError 507), the ping
        not recorded.
        """
        try:
            self._append(ping.tsv_line().encode("utf-8"))
        except OSError as exc:
            if no_space(exc):
                self.headroom.filled()
                raise ApiError(ErrorCode.INSUFFICIENT_STORAGE,
                               "the server's disk is full: the ping could not be recorded"
                               ) from exc
            log.exception("could not append the ping of %s to %s", ping.hw_id, self.pings_dir)
        else:
            self.headroom.wrote()
        try:
            self.table.submit(ping.db_row())
        except RuntimeError:  # no thread could be started for the writer
            log.exception("ping of %s is in the TSV log but not in the database", ping.hw_id)

    def _append(self, line: bytes) -> None:
        # No lock while the file in use has room: O_APPEND writes land whole, and a file is
        # only left once it has passed rotate_bytes, which every process sees alike.
        path = self._current
        if path is not None and self._has_room(path):
            _append_line(path, line)
            return
        # Rotation is decided by one process at a time, so no two start different files.
        with file_lock(self.lock_path):
            path = self._current = self._current_file()
            _append_line(path, line)

    def _has_room(self, path: Path) -> bool:
        try:
            return os.stat(path).st_size < self.rotate_bytes
        except FileNotFoundError:  # moved away or deleted: look again
            return False

    def _current_file(self) -> Path:
        """The file to append to, starting the next one once the last passes rotate_bytes."""
        files = ping_files(self.pings_dir)
        if not files:
            self.pings_dir.mkdir(parents=True, exist_ok=True)
            return self.pings_dir / "pings-0000.tsv"
        last = files[-1]
        if self._has_room(last):
            return last
        return self.pings_dir / f"pings-{int(last.name[6:-4]) + 1:04d}.tsv"

    def recent(self, count: int) -> list[str]:
        """The last `count` TSV lines, newest first, read from the end of the newest files."""
        lines: list[str] = []
        for path in reversed(ping_files(self.pings_dir)):
            lines.extend(reversed(tail_lines(path, count - len(lines))))
            if len(lines) >= count:
                break
        return lines[:count]


def tail_lines(path: Path, count: int) -> list[str]:
    """The last `count` complete lines of a file, reading backwards block by block."""
    if count <= 0:
        return []
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        data = b""
        position = end
        while position > 0 and data.count(b"\n") <= count:
            step = min(TAIL_BLOCK, position)
            position -= step
            f.seek(position)
            data = f.read(step) + data
    lines = data.decode("utf-8", errors="replace").splitlines()
    if position > 0:
        lines = lines[1:]  # the first line read may be cut
    return lines[-count:]
