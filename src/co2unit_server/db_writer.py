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

from . import db

log = logging.getLogger(__name__)
MAX_BATCH = 1000  # submitted rows written in one transaction


class BatchWriter:
    """Writes one process's rows with one SQL statement from a thread of its own.

    A request only queues its row; the writer inserts what has queued, a batch per
    transaction, within milliseconds. A batch that cannot be written (database locked,
    corrupt, process killed) is logged with `lost_note` saying where the rows still are.
    Row element `unit_at` is the unit's hw_id, for that log line.
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
            self._insert(batch)
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

    def _insert(self, batch: list[tuple]) -> None:
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._write(conn, batch)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except Exception:  # whatever it is, the writer must live on for the next batch
            units = sorted({row[self.unit_at] for row in batch})
            log.exception("%d %s row(s) of %s are %s %s", len(batch), self.what,
                          ", ".join(units), self.lost_note, self.db_path)
            self._close()

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
