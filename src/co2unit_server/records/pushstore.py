"""Storage of pushed files: resumable, durable, gap-free writes and the units' ack_file.

Rules (docs/unit-protocol.md): bytes go only at an offset inside or at the end of the stored
file, never past it; a re-sent chunk with the same bytes changes nothing; different bytes over a
stored range mean a new SD card, so the whole pushed directory is moved aside to `superseded/`
first; every byte is fsynced before it is acknowledged; one directory's pushes are serialised
with a lock shared by all uWSGI processes and threads.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..core.errors import ApiError, ErrorCode
from ..core.headroom import Headroom, no_space
from ..core.locking import file_lock

log = logging.getLogger(__name__)

SUPERSEDED_DIR = "superseded"


@dataclass(frozen=True)
class Ack:
    """The server's position a unit resynchronises to: a file name and its stored size."""

    name: str
    size: int

    def as_json(self) -> list:
        return [self.name, self.size, self.size]


@dataclass(frozen=True)
class Stored:
    """What one push added to its file, for the push statistics."""

    path: str
    start: int  # where the new bytes begin in the file
    new: bytes  # empty for a re-sent chunk

    def before(self, n: int) -> bytes:
        """Up to `n` stored bytes just before the new ones (fewer at the file's start).

        Read on demand, after the push: bytes before `start` never change (appends only).
        """
        first = max(0, self.start - n)
        try:
            with open(self.path, "rb") as f:
                f.seek(first)
                return f.read(self.start - first)
        except OSError:  # moved aside to superseded/ since: no context
            return b""


def fsync_dir(path: str | Path) -> None:
    """Make a directory's entries (a new file, a rename) survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: str) -> list[str]:
    """Create `path` and its missing parents; return the directories that gained an entry.

    The caller fsyncs those after its own writes: on a journalling file system the first
    fsync commits every new entry at once, where an fsync after each mkdir cost one each.
    """
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for directory in reversed(missing):
        try:
            os.mkdir(directory)
        except FileExistsError:
            if not os.path.isdir(directory):  # a file in the way, not a racing mkdir
                raise
    return [os.path.dirname(directory) for directory in missing]


def file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


class PushStore:
    """Pushed files under `<root>/<hw_id>/<dir>/<file>`.

    The per-chunk path works on plain strings: a chunk is a few syscalls, and pathlib's object
    building cost as much again.
    """

    def __init__(self, root: Path, locks_dir: Path, push_dirs: Sequence[str],
                 max_file_bytes: int, min_free_bytes: int) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._root = str(self.root)
        self._locks_dir = str(locks_dir)
        self.push_dirs = tuple(push_dirs)
        self.max_file_bytes = max_file_bytes
        self.headroom = Headroom(self.root, min_free_bytes, "unit pushes")

    def check_pushable(self, segments: Sequence[str]) -> None:
        """Refuse a push outside the configured directories (never into `updates/`)."""
        if len(segments) < 2 or segments[0] not in self.push_dirs:
            raise ApiError(ErrorCode.FORBIDDEN_DIR,
                           f"pushes go into {', '.join(d + '/' for d in self.push_dirs)} only; "
                           f"refused {'/'.join(segments)!r}")

    def push(self, hw_id: str, segments: Sequence[str], offset: int, data: bytes) -> Ack:
        """Store `data` at `offset` of the file and return the directory's ack."""
        return self.store(hw_id, segments, offset, data)[0]

    def store(self, hw_id: str, segments: Sequence[str], offset: int,
              data: bytes) -> tuple[Ack, Stored]:
        """push(), also saying which bytes were new to the file."""
        self.check_pushable(segments)
        *dir_segments, name = segments
        if offset + len(data) > self.max_file_bytes:
            raise ApiError(ErrorCode.FILE_TOO_LARGE,
                           f"{name} would reach {offset + len(data)} bytes; the limit is "
                           f"{self.max_file_bytes}")
        directory = os.path.join(self._root, hw_id, *dir_segments)
        path = os.path.join(directory, name)
        with self._locked(hw_id, dir_segments):
            size = self._stored_size(path)
            if offset > size:
                raise self._skipped(directory, name, size, offset)
            if not self._matches_stored(path, offset, data[: size - offset]):
                self._supersede(hw_id, dir_segments, name, offset)
                size = 0
                if offset > 0:
                    raise self._skipped(directory, name, size, offset)
            new_bytes = data[size - offset:]
            if new_bytes:
                self._write(path, size, new_bytes)
            pushed = Ack(name, size + len(new_bytes))
            return (self._last_file(directory, pushed) or pushed), Stored(path, size, new_bytes)

    def _skipped(self, directory: str, name: str, size: int, offset: int) -> ApiError:
        """A 416 whose ack_file is where the unit must resume."""
        resume = Ack(name, size)
        last = self._last_file(directory) if size == 0 else None
        if last is not None and last.name < name:
            # The server lacks this whole file (and maybe the ones before it): resume after
            # the last file it has, so the unit re-sends every missing file in order.
            resume = last
        return ApiError(ErrorCode.SKIPPED_PART_OF_FILE,
                        f"offset {offset} is past the {size} bytes stored of {name}; "
                        f"re-send from {resume.name} at {resume.size}",
                        ack_file=resume.as_json())

    def _stored_size(self, path: str) -> int:
        """Size of the stored file (0 if none); refuse a path that collides with a directory."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return 0
        except NotADirectoryError:
            raise self._collision(path) from None
        if not stat.S_ISREG(st.st_mode):
            raise self._collision(path)
        return st.st_size

    def _collision(self, path: str) -> ApiError:
        return ApiError(ErrorCode.BAD_PATH, f"{os.path.relpath(path, self._root)} collides with an "
                        "existing file or directory on the server")

    @staticmethod
    def _matches_stored(path: str, offset: int, overlap: bytes) -> bool:
        """True when the stored bytes at `offset` equal the start of the re-sent chunk."""
        if not overlap:
            return True
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(len(overlap)) == overlap

    def _write(self, path: str, size: int, new_bytes: bytes) -> None:
        """Write `new_bytes` at `size` and fsync; on failure leave the file as it was."""
        self._check_free_space(len(new_bytes))
        existed = size > 0 or os.path.exists(path)
        new_entries_in: list[str] = []  # directories to fsync once the data is down
        if not existed:
            parent = os.path.dirname(path)
            try:
                new_entries_in = [parent, *make_dirs(parent)]
            except (FileExistsError, NotADirectoryError):
                raise self._collision(path) from None
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(new_bytes)
            position = size
            while view:
                written = os.pwrite(fd, view, position)
                view, position = view[written:], position + written
            # fdatasync: data and the new size, without the mtime update fsync would add.
            os.fdatasync(fd)
        except OSError as exc:
            self._undo_write(fd, path, size, existed)
            if no_space(exc):
                self.headroom.filled()
                raise ApiError(ErrorCode.INSUFFICIENT_STORAGE,
                               "the disk filled up while writing; nothing was stored") from exc
            raise
        finally:
            os.close(fd)
        for directory in new_entries_in:
            fsync_dir(directory)

    @staticmethod
    def _undo_write(fd: int, path: str, size: int, existed: bool) -> None:
        # Only bytes we have not acknowledged are removed: the file goes back to `size`.
        try:
            if existed:
                os.ftruncate(fd, size)
            elif os.path.lexists(path):
                os.unlink(path)
        except OSError:
            log.exception("could not undo a failed write to %s", path)

    def _check_free_space(self, needed: int) -> None:
        headroom = self.headroom
        if headroom.full(needed):
            raise ApiError(ErrorCode.INSUFFICIENT_STORAGE,
                           f"only {headroom.free} bytes free on the server, below the floor of "
                           f"{headroom.min_free_bytes}; nothing was written")

    def _supersede(self, hw_id: str, dir_segments: Sequence[str], name: str,
                   offset: int) -> None:
        """Move the pushed directory aside, intact, so a new sequence starts clean."""
        directory = self.root.joinpath(hw_id, *dir_segments)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        dest = self.root.joinpath(hw_id, SUPERSEDED_DIR, stamp, *dir_segments)
        new_entries_in = make_dirs(str(dest.parent))
        os.rename(directory, dest)
        for changed in (dest.parent, directory.parent, *new_entries_in):
            fsync_dir(changed)
        log.warning("%s pushed %s at offset %d with bytes that differ from the stored copy "
                    "(new SD card?): moved %s aside to %s", hw_id, name, offset,
                    directory.relative_to(self.root), dest.relative_to(self.root))

    @staticmethod
    def _last_file(directory: str, known: Ack | None = None) -> Ack | None:
        """The last file by name in a directory, as the units expect in ack_file.

        `known` is a file whose size is already known (saves a stat when it is the last).
        """
        try:
            with os.scandir(directory) as entries:
                last = max((e.name for e in entries if e.is_file(follow_symlinks=False)),
                           default=None)
        except FileNotFoundError:
            return None
        if last is None:
            return None
        if known is not None and known.name == last:
            return known
        return Ack(last, file_size(os.path.join(directory, last)))

    def _locked(self, hw_id: str, dir_segments: Sequence[str]) -> AbstractContextManager:
        """An exclusive lock on one pushed directory, across processes and threads."""
        key = "/".join([hw_id, *dir_segments]).encode()
        return file_lock(os.path.join(self._locks_dir, hashlib.sha1(key).hexdigest() + ".lock"))
