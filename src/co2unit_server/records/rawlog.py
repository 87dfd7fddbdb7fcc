"""The gateways' raw logs: remote_data/<family>/<device>/NNNN.log, the record of truth.

Every packet or poll a gateway receives is appended here as it arrived, before anything is
parsed, and fsynced (group commit: one fsync round for whatever arrived within a few
milliseconds) before its values are stored. One readable line each, tab-separated:

    ts  peer  end  verdict  detail  payload

`ts` is the UTC receive time ('YYYY-MM-DDTHH:MM:SS.ffffff'), `peer` the device's address (or
the polled URL), `end` how the exchange ended (`eof`, `timeout`, `reset`, `too-large` for
TCP; the HTTP status or `-` for a poll without answer), `verdict` what the gateway made of
it (VERDICTS), `detail` why (empty when ok), `payload` `hex:<bytes>` or `text:<text>` (text
only when it is printable UTF-8 on one line). The importer reads the same lines, so a row
lost between log and table comes back, and a database rebuilt from the logs alone is the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import logging
import os
import queue
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from ..database.rows import VERDICTS

if TYPE_CHECKING:
    from ..core.config import Config

log = logging.getLogger(__name__)

LOG_FILE_RE = re.compile(r"(\d{4,})\.log")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EPOCH = datetime(1970, 1, 1)
_ONE_US = timedelta(microseconds=1)
# A sync round with more files to make durable than this syncs their filesystem once instead
# (syncfs): an fsync each costs a journal commit each (0.3-1 ms on ext4), so a WebSocket fleet
# of 1,000 devices, each with a line in most rounds, would wait for a second a round.
SYNCFS_OVER_FILES = 8


def _load_syncfs() -> Callable[[int], None] | None:
    """Linux's syncfs(2) (as PostgreSQL uses it), or None where the C library has none."""
    try:
        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    syncfs.argtypes, syncfs.restype = [ctypes.c_int], ctypes.c_int

    def sync_filesystem(fd: int) -> None:
        """Make everything written on fd's filesystem durable (the GIL is let go meanwhile);
        OSError as fsync raises it (Linux reports writeback errors here since 5.8)."""
        if syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    return sync_filesystem


_syncfs = _load_syncfs()


def ts_text(us: int) -> str:
    """Microseconds since 1970 (UTC) as the logs and tables write them."""
    seconds, micros = divmod(us, 1_000_000)
    return f"{_second_text(seconds)}.{micros:06d}"


@functools.lru_cache(maxsize=4)
def _second_text(seconds: int) -> str:
    # The gateways stamp thousands of lines a second: the date and time of the second once.
    return (_EPOCH + timedelta(seconds=seconds)).isoformat()


def ts_texts(first_us: int, step_us: int, count: int) -> list[str]:
    """[ts_text(first_us + i * step_us) for i in range(count)], at half the cost: a step of a
    datetime each, not a conversion (as exact: datetime counts whole microseconds)."""
    at, step = _EPOCH + timedelta(microseconds=first_us), timedelta(microseconds=step_us)
    texts = []
    for _ in range(count):
        texts.append(at.isoformat(timespec="microseconds"))
        at += step
    return texts


def ts_us(text: str) -> int:
    """The inverse of ts_text (exact: no float on the way)."""
    return (datetime.fromisoformat(text) - _EPOCH) // _ONE_US


def encode_payload(payload: bytes) -> str:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and text and not _CONTROL.search(text):
        return "text:" + text
    return "hex:" + payload.hex()


def decode_payload(field: str) -> bytes:
    kind, sep, data = field.partition(":")
    if kind == "text" and sep:
        return data.encode("utf-8")
    if kind == "hex" and sep:
        return bytes.fromhex(data)
    raise ValueError(f"payload is neither hex: nor text: ({field[:20]!r})")


def _clean(text: str) -> str:
    return _CONTROL.sub(" ", text)


@dataclass(frozen=True)
class RawLine:
    """One line of a raw log."""

    ts: str
    peer: str
    end: str
    verdict: str
    detail: str
    payload: bytes

    def encode(self) -> bytes:
        fields = [self.ts, _clean(self.peer), _clean(self.end), self.verdict,
                  _clean(self.detail), encode_payload(self.payload)]
        return ("\t".join(fields) + "\n").encode("utf-8")

    @classmethod
    def parse(cls, line: str) -> RawLine:
        """The line's fields; ValueError for a line no gateway wrote (torn, edited)."""
        fields = line.rstrip("\n").split("\t")
        if len(fields) != 6:
            raise ValueError(f"{len(fields)} fields, not 6")
        ts, peer, end, verdict, detail, payload = fields
        ts_us(ts)
        if verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {verdict!r}")
        return cls(ts, peer, end, verdict, detail, decode_payload(payload))


def log_files(device_dir: Path) -> list[Path]:
    """A device's raw logs in sequence order."""
    try:
        names = [n for n in os.listdir(device_dir) if LOG_FILE_RE.fullmatch(n)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [device_dir / n for n in sorted(names, key=lambda n: int(n[:-4]))]


def devices(family_dir: Path) -> list[str]:
    """The devices that have a raw log directory in a family, sorted."""
    try:
        return sorted(e.name for e in os.scandir(family_dir)
                      if e.is_dir() and not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


def source_key(path: Path, line_number: int) -> str:
    """'<family>/<device>/<NNNN>.log:<line>' of a line of the log at `path`."""
    return f"{path.parent.parent.name}/{path.parent.name}/{path.name}:{line_number}"


def parse_raw(raw: bytes) -> RawLine | None:
    """A complete line's fields, or None when no gateway wrote it so (torn, edited)."""
    try:
        return RawLine.parse(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def read_lines_of(path: Path) -> Iterator[tuple[str, RawLine | None]]:
    """(source, line or None when unreadable) of every complete line of one log file."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                break  # being written: the next reader sees it whole
            yield source_key(path, number), parse_raw(raw)


def read_lines(device_dir: Path) -> Iterator[tuple[str, RawLine | None]]:
    """(source, line or None) of every complete line of a device's logs, oldest first."""
    for path in log_files(device_dir):
        yield from read_lines_of(path)


class _DeviceFile:
    """The file a device's lines go to now: its descriptor and how many lines it holds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        data = b""
        size = os.fstat(self.fd).st_size
        if size:
            data = os.pread(self.fd, size, 0)
        if data and not data.endswith(b"\n"):
            # A line torn by a crash: end it, so it stays one unreadable line of its own
            # (the importer counts it) and the next line starts clean.
            log.warning("%s ended in a torn line; it is kept and ended", path)
            os.write(self.fd, b"\n")
            data += b"\n"
        self.lines = data.count(b"\n")
        self.size = len(data)
        self.key_prefix = source_key(path, 0)[:-1]  # a line's source is this and its number


class RawLog:
    """Appends lines to the raw logs of one family; `sync` makes what was appended durable."""

    def __init__(self, remote_data_dir: Path, family: str, rotate_bytes: int) -> None:
        self.family = family
        self.family_dir = remote_data_dir / family
        self.rotate_bytes = rotate_bytes
        self._files: dict[str, _DeviceFile] = {}
        self._dirty: set[int] = set()
        self._retired: list[int] = []  # left by rotation; closed once fsynced
        self._lock = threading.Lock()  # append runs in the loop, sync in a thread

    def device_dir(self, device: str) -> Path:
        return self.family_dir / device

    def append(self, device: str, line: RawLine) -> str:
        """Append one line (one write(), whole) and return its source key; not yet durable.
        OSError when it could not be written whole (nothing of it is left in the log)."""
        data = line.encode()
        with self._lock:
            current = self._current(device)
            written = os.write(current.fd, data)
            if written != len(data):
                # A disk that fills mid-line writes part of it: cut it off, or the next line
                # would be glued to it and both be unreadable, though acknowledged.
                os.ftruncate(current.fd, current.size)
                raise OSError(errno.ENOSPC, f"{written} of {len(data)} bytes written",
                              str(current.path))
            current.lines += 1
            current.size += len(data)
            self._dirty.add(current.fd)
            return current.key_prefix + str(current.lines)

    def open_device(self, device: str) -> None:
        """Open the device's current log now (directory, file, its line count: blocking I/O,
        for a thread) so that its first append, in the event loop, does not."""
        with self._lock:
            self._current(device)

    def _current(self, device: str) -> _DeviceFile:
        current = self._files.get(device)
        if current is not None and current.size < self.rotate_bytes:
            return current
        if current is not None:
            self._retire(current)
        directory = self.device_dir(device)
        directory.mkdir(parents=True, exist_ok=True)
        files = log_files(directory)
        path = files[-1] if files else directory / "0000.log"
        if files and path.stat().st_size >= self.rotate_bytes:
            path = directory / f"{int(path.name[:-4]) + 1:04d}.log"
        opened = self._files[device] = _DeviceFile(path)
        return opened

    def _retire(self, old: _DeviceFile) -> None:
        # Its last lines may still wait for an fsync: the next sync does it, then closes it
        # (closing here could pull the descriptor from under a sync running in its thread).
        self._dirty.discard(old.fd)
        self._retired.append(old.fd)

    def sync(self) -> None:
        """fsync every file appended to since the last sync (blocking: run it in a thread);
        past SYNCFS_OVER_FILES files, one syncfs of the family's filesystem does it."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            retired, self._retired = self._retired, []
        fds = (*dirty, *retired)
        if len(fds) > SYNCFS_OVER_FILES and _syncfs is not None:
            _syncfs(fds[0])  # the family's directory is on one filesystem
        else:
            for fd in fds:
                os.fsync(fd)
        for fd in retired:
            os.close(fd)

    def close(self) -> None:
        """Make everything durable and close every file."""
        self.sync()
        with self._lock:
            for current in self._files.values():
                os.fsync(current.fd)
                os.close(current.fd)
            self._files.clear()
            self._dirty.clear()


class GroupCommit:
    """Makes appended lines durable together: waiters within `window_s` share one fsync round."""

    def __init__(self, sync: Callable[[], None], window_s: float) -> None:
        self._sync = sync
        self._window_s = window_s
        self._round: asyncio.Task | None = None
        self._requests: queue.SimpleQueue | None = None

    async def durable(self) -> None:
        """Return once everything appended before this call is fsynced (raises OSError)."""
        if self._round is None:
            self._round = asyncio.get_running_loop().create_task(self._run())
        await asyncio.shield(self._round)

    def close(self) -> None:
        """End the sync thread (once the rounds queued are done)."""
        if self._requests is not None:
            self._requests.put(None)
            self._requests = None

    @property
    def window_s(self) -> float:
        return self._window_s

    def sync_then(self, then: Callable[[BaseException | None], None]) -> None:
        """Sync now, after the syncs asked for before, then call `then(error or None)` in
        this event loop: a round with no future or task to wake (the WebSocket gateway's)."""
        self._syncer().put((asyncio.get_running_loop(), then))

    async def _run(self) -> None:
        await asyncio.sleep(self._window_s)
        self._round = None  # what is appended from now on waits for the next round
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self.sync_then(lambda error: _settle(done, error))
        await done

    def _syncer(self) -> queue.SimpleQueue:
        """The queue of the thread that runs the syncs (started at the first round).

        One thread of its own, not asyncio.to_thread: the executor's machinery took the GIL
        back and forth a dozen times a round (2,800 thread switches a second at 10,000 msg/s),
        each time waking a thread from the event loop."""
        if self._requests is None:
            self._requests = queue.SimpleQueue()
            threading.Thread(target=self._sync_rounds, args=(self._requests,),
                             name="raw log sync", daemon=True).start()
        return self._requests

    def _sync_rounds(self, requests: queue.SimpleQueue) -> None:
        """(The sync thread.) Every request that waits shares the next sync (what each one
        appended came before it), answered in order in the requester's loop.

        One sync a request queued them behind a slow sync (tens of milliseconds while SQLite's
        writes were on the disk): their acks waited for every sync in front."""
        while True:
            waiting = [requests.get()]
            with contextlib.suppress(queue.Empty):
                while waiting[-1] is not None:
                    waiting.append(requests.get_nowait())
            closing = waiting[-1] is None
            if closing:
                waiting.pop()
            if waiting:
                self._sync_for(waiting)
            if closing:
                return

    def _sync_for(self, waiting: list[tuple[asyncio.AbstractEventLoop, Callable]]) -> None:
        try:
            self._sync()
            error = None
        except BaseException as exc:
            error = exc
        for loop, then in waiting:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(then, error)


def _settle(done: asyncio.Future, error: BaseException | None) -> None:
    if done.cancelled():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


def open_family(config: Config, family: str) -> tuple[RawLog, GroupCommit]:
    """A gateway's raw log and the group commit that makes it durable, as the settings say."""
    log = RawLog(config.remote_data_dir, family, config.raw_log_rotate_bytes)
    return log, GroupCommit(log.sync, config.raw_log_sync_ms / 1000)
