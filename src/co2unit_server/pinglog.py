"""The alive-ping log: var/pings/pings-NNNN.tsv (the record of truth) and the `pings` table."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from . import db
from .locking import file_lock

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
        os.write(fd, line)
    finally:
        os.close(fd)


def ping_files(pings_dir: Path) -> list[Path]:
    """The ping logs in sequence order."""
    try:
        names = [n for n in os.listdir(pings_dir) if PING_FILE_RE.fullmatch(n)]
    except FileNotFoundError:
        return []
    return [pings_dir / n for n in sorted(names, key=lambda n: int(n[6:-4]))]


class PingTable:
    """Inserts one process's pings into the `pings` table from a thread of its own.

    The TSV line is written before the reply; the row follows within milliseconds, a batch
    per transaction. Inserting in the request cost a fifth of a ping's CPU and, with every
    thread of both processes taking SQLite's write lock in turn, the slowest replies. A row
    that never makes it (database locked, corrupt, process killed) is logged, and is still in
    the TSV, from which `make` in database/ imports it.
    """

    def __init__(self, db_path: Path, busy_timeout_ms: int) -> None:
        self.db_path = db_path
        self.busy_timeout_ms = busy_timeout_ms
        # uWSGI loads the app, then forks the workers: each starts its own writer on first
        # use. This lock is never held in the master, so a fork cannot copy it held.
        self._start_lock = threading.Lock()
        self._pid: int | None = None
        self._fresh_state()

    def _fresh_state(self) -> None:
        """The queue and connection of one process (a forked child starts with its own)."""
        self._cond = threading.Condition()
        self._pending: list[tuple] = []
        self._submitted = self._done = 0
        self._conn: tuple[sqlite3.Connection, tuple[int, int]] | None = None

    def submit(self, row: tuple) -> None:
        """Queue one ping row (as Ping.db_row gives it) for insertion."""
        if self._pid != os.getpid():
            self._start()
        with self._cond:
            self._pending.append(row)
            self._submitted += 1
            self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every row submitted so far is written or given up; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._done >= self._submitted, timeout)

    def _start(self) -> None:
        with self._start_lock:
            if self._pid == os.getpid():
                return
            self._fresh_state()
            threading.Thread(target=self._run, name="ping-table", daemon=True).start()
            atexit.register(self.flush, 2.0)
            self._pid = os.getpid()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending)
                batch, self._pending = self._pending, []
            self._insert(batch)
            with self._cond:
                self._done += len(batch)
                self._cond.notify_all()

    def _insert(self, batch: list[tuple]) -> None:
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(INSERT_PING, batch)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except Exception:  # whatever it is, the writer must live on for the next batch
            units = sorted({row[3] for row in batch})
            log.exception("%d ping(s) of %s are in the TSV log but not in %s", len(batch),
                          ", ".join(units), self.db_path)
            self._close()

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn[0].close()
            self._conn = None

    def _connection(self) -> sqlite3.Connection:
        """The writer's connection, reopened when the database file was replaced."""
        try:
            st = self.db_path.stat()
            identity = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            identity = None
        if self._conn is not None and self._conn[1] == identity:
            return self._conn[0]
        self._close()
        conn = db.connect(self.db_path, self.busy_timeout_ms)
        db.init_schema(conn)
        st = self.db_path.stat()
        self._conn = (conn, (st.st_dev, st.st_ino))
        return conn


class PingLog:
    """Appends pings to the rotating TSV log and hands them on to the `pings` table."""

    def __init__(self, pings_dir: Path, rotate_bytes: int, lock_path: Path, db_path: Path,
                 busy_timeout_ms: int) -> None:
        self.pings_dir = pings_dir
        self.rotate_bytes = rotate_bytes
        self.lock_path = lock_path
        self.table = PingTable(db_path, busy_timeout_ms)
        self._current: Path | None = None  # the file this process appends to

    def record(self, ping: Ping) -> None:
        """Append the ping to the TSV, then hand it to the table; failures are logged.

        Never raises: a unit that gets anything but 200 for its ping ends its cycle without
        pushing its data, so a broken log must not cost it the day.
        """
        try:
            self._append(ping.tsv_line().encode("utf-8"))
        except OSError:
            log.exception("could not append the ping of %s to %s", ping.hw_id, self.pings_dir)
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
