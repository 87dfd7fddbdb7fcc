"""A batching writer thread per process: requests queue rows, one thread inserts them.

uWSGI loads the app, then forks its workers: each worker starts its own thread and connection
on first use. Used for pings, update downloads and push statistics.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

from ..core.headroom import no_space
from . import db

log = logging.getLogger(__name__)
MAX_BATCH = 1000  # submitted rows written in one transaction
FULL_RETRY_S = 1.0  # between two tries of a batch while the disk is full


def disk_full(exc: BaseException) -> bool:
    """Whether a database error says the disk is full: SQLITE_FULL, SQLITE_IOERR_SHMSIZE (SQLite
    writes a byte to each page it adds to the -shm file, so that a full disk fails the write
    instead of raising SIGBUS in the mapping later: os_unix.c, unixShmMap), or ENOSPC itself."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", 0)
        return code == sqlite3.SQLITE_IOERR_SHMSIZE or code & 0xFF == sqlite3.SQLITE_FULL
    return no_space(exc)


class BatchWriter:
    """Writes one process's rows with one SQL statement from a thread of its own.

    A request only queues its row; the writer inserts what has queued, a batch per
    transaction, within milliseconds. A batch that cannot be written (database locked,
    corrupt, process killed) is logged with `lost_note` saying where the rows still are.
    Row element `unit_at` is the unit's hw_id, for that log line. A full disk loses nothing:
    the batch is kept and tried again every FULL_RETRY_S until there is room, with one log
    line when the disk fills and one when the rows go in again.
    """

    cache_kib = 0  # the connection's page cache; 0: SQLite's default (2 MiB)
    # The least time between the starts of two transactions, unless a whole one waits already
    # (a writer that is behind goes on at once).
    linger_s = 0.0

    def __init__(self, db_path: Path, busy_timeout_ms: int, sql: str, what: str,
                 lost_note: str, unit_at: int = 3) -> None:
        self.db_path = db_path
        self.busy_timeout_ms = busy_timeout_ms
        self.sql = sql
        self.what = what
        self.lost_note = lost_note
        self.unit_at = unit_at
        # uWSGI loads the app, then forks the workers: each starts its own writer on first
        # use. This lock is never held in the master, so a fork cannot copy it held.
        self._start_lock = threading.Lock()
        self._pid: int | None = None
        self._full = False  # the last try failed for want of space
        self._fresh_state()

    def _fresh_state(self) -> None:
        """The queue and connection of one process (a forked child starts with its own)."""
        self._cond = threading.Condition()
        self._pending: list[tuple] = []
        self._submitted = self._done = 0
        self._conn: tuple[sqlite3.Connection, tuple[int, int]] | None = None

    def submit(self, row: tuple) -> None:
        """Queue one row (the statement's parameters) for insertion."""
        self.submit_many([row])

    def submit_many(self, rows: list[tuple]) -> None:
        """Queue rows for insertion (written in one batch with whatever else is waiting)."""
        if self._pid != os.getpid():
            self._start()
        with self._cond:
            self._pending.extend(rows)
            self._submitted += len(rows)
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
            threading.Thread(target=self._run, name=f"{self.what}-writer", daemon=True).start()
            atexit.register(self.flush, 2.0)
            self._pid = os.getpid()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending)
                batch = self._take()
            started = time.monotonic()
            while not self._insert(batch):  # the disk is full: the batch is kept
                time.sleep(FULL_RETRY_S)
            with self._cond:
                self._done += len(batch)
                self._cond.notify_all()
                behind = self._behind()
            if self.linger_s and not behind:
                time.sleep(max(0.0, started + self.linger_s - time.monotonic()))

    def _behind(self) -> bool:
        """Whether a whole transaction's rows wait already (the lock is held)."""
        return len(self._pending) >= MAX_BATCH

    def _take(self) -> list[tuple]:
        """The next transaction's rows, taken from the queue (the lock is held).

        Bounded: a long transaction would hold the write lock past the busy timeout of the
        other writers (other processes, the importer)."""
        batch = self._pending[:MAX_BATCH]
        del self._pending[:MAX_BATCH]
        return batch

    def _insert(self, batch: list[tuple]) -> bool:
        """Write one batch; False when the disk is full (the batch is to be tried again)."""
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._write(conn, batch)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled it back itself (SQLITE_FULL)
                    conn.execute("ROLLBACK")
                raise
        except Exception as exc:  # whatever it is, the writer must live on for the next batch
            self._close()
            if disk_full(exc):
                self._filled(exc, len(batch))
                return False
            units = sorted({row[self.unit_at] for row in batch})
            log.exception("%d %s row(s) of %s are %s %s", len(batch), self.what,
                          ", ".join(units), self.lost_note, self.db_path)
        if self._full:
            self._full = False
            log.warning("%s writer: %s has room again: the rows kept are written",
                        self.what, self.db_path)
        return True

    def _filled(self, exc: BaseException, rows: int) -> None:
        if not self._full:
            self._full = True
            log.error("%s writer: %s: %s; %d row(s) and those queued after them are kept "
                      "and tried again every %g s", self.what, self.db_path, exc, rows,
                      FULL_RETRY_S)

    def _write(self, conn: sqlite3.Connection, batch: list[tuple]) -> None:
        """Insert one batch, inside the writer's transaction."""
        conn.executemany(self.sql, batch)

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
        if self.cache_kib:
            conn.execute(f"PRAGMA cache_size = -{int(self.cache_kib)}")
        db.init_schema(conn)
        st = self.db_path.stat()
        self._conn = (conn, (st.st_dev, st.st_ino))
        return conn
