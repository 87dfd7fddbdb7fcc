"""The measurement store's writer: a process of its own that puts the gateways' rows in SQLite.

In the gateway process, a writer thread shared the GIL and the CPUs with the event loop: at
10,000 WebSocket messages a second its transactions stretched the loop's turns, and with them
the acks. Here `ProcessStore` hands the rows to a child
(`python -m co2unit_server.database.store_writer`) through a pipe, from a thread of its own;
the child writes them at a lower CPU priority and answers how many it has written, which is
what `flush` waits for.

The child ends when its stdin closes (`ProcessStore.close()`, or the gateway process's death),
after writing what it has. It ignores SIGINT and SIGTERM: they reach the whole process group at
a Ctrl-C or a `systemctl stop`, before the gateways have handed over their last rows. A child
that dies is logged with what it had not written (the raw log still has it: the next import
stores it); the next rows start a new one.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import pickle
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

from . import db
from .db_writer import BatchWriter

if TYPE_CHECKING:
    from .rows import Receipt

log = logging.getLogger(__name__)
LOST_NOTE = "in the raw log (the next import stores them) but not in"
# A frame's length (to the child), receipts written (from it).
_COUNT = struct.Struct("<I")
# Receipts (with their values) pickled into one frame at most: a millisecond of the GIL.
FRAME_ITEMS = 1000
# The child's nice increment: the event loop that acknowledges must have the CPU first. (Not
# SCHED_IDLE: a busy machine could starve the store for good.)
NICENESS = 10
# How long close() lets a child that has rows it could not write (a full disk) end by itself.
END_UNWRITTEN_S = 1.0


class ProcessStore:
    """The SQLite measurement store (see measurement_store.MeasurementStore), written by a
    child process."""

    def __init__(self, db_path: Path, busy_timeout_ms: int, log_level: str) -> None:
        self._command = [sys.executable, "-m", __name__, str(db_path), str(busy_timeout_ms),
                         log_level]
        self._db_path = db_path
        self._cond = threading.Condition()
        self._pending: list[tuple] = []
        self._submitted = self._done = 0
        self._closing = False
        self._child: _Child | None = None
        self._sender: threading.Thread | None = None

    def add(self, receipt: Receipt, rows: Sequence[tuple]) -> None:
        self.add_many([(receipt, rows)])

    def add_many(self, items: Sequence[tuple[Receipt, Sequence[tuple]]]) -> None:
        queued = [(receipt.device, receipt.row(), rows) for receipt, rows in items]
        with self._cond:
            if self._closing:
                raise RuntimeError("the measurement store is closed")
            self._pending += queued
            self._submitted += len(queued)
            if self._sender is None:
                self._sender = threading.Thread(target=self._send, name="store sender",
                                                daemon=True)
                self._sender.start()
            self._cond.notify_all()

    def flush(self, timeout: float | None = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._done >= self._submitted, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what was added (waiting up to `timeout`), then end the child; what it could
        not write by then (a full disk) is logged as it ends."""
        written = self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._sender is not None:
            self._sender.join(timeout)
        if self._child is not None:
            # Not a second wait for rows that did not go in: a full disk keeps them back.
            self._child.end(timeout if written else END_UNWRITTEN_S)

    # --- the sender thread

    def _send(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closing)
                if not self._pending:  # closing, and everything is sent
                    break
                items = self._pending[:FRAME_ITEMS]
                del self._pending[:FRAME_ITEMS]
            frame = pickle.dumps(items, pickle.HIGHEST_PROTOCOL)
            try:
                child = self._running_child()
            except OSError as exc:
                log.error("store writer could not start (%s): %d receipt(s) (with their "
                          "values) are %s %s", exc, len(items), LOST_NOTE, self._db_path)
                self._count(len(items))
                continue
            child.send(len(items), _COUNT.pack(len(frame)) + frame)
        if self._child is not None:
            self._child.close_input()

    def _running_child(self) -> _Child:
        if self._child is None or not self._child.running():
            self._child = _Child(subprocess.Popen(self._command, stdin=subprocess.PIPE,
                                                  stdout=subprocess.PIPE), self)
        return self._child

    def _count(self, done: int) -> None:
        with self._cond:
            self._done += done
            self._cond.notify_all()


class _Child:
    """One writer process: what was sent to it, and a thread reading what it has written."""

    def __init__(self, popen: subprocess.Popen, store: ProcessStore) -> None:
        self.popen = popen
        self.store = store
        self.sent = self.done = 0
        self._reader = threading.Thread(target=self._read_counts, name="store counts",
                                        daemon=True)
        self._reader.start()

    def running(self) -> bool:
        return self.popen.poll() is None

    def send(self, items: int, data: bytes) -> None:
        with self.store._cond:
            self.sent += items
        # A write to a child that died fails: its reader gives up what it had not written.
        with contextlib.suppress(OSError):
            _write_all(self.popen.stdin.fileno(), data)

    def close_input(self) -> None:
        with contextlib.suppress(OSError):
            self.popen.stdin.close()

    def end(self, timeout: float) -> None:
        self.close_input()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("store writer %d did not end within %g s: killed", self.popen.pid,
                      timeout)
            self.popen.kill()
            self.popen.wait()
        self._reader.join(timeout)  # its line on what was not written comes before we return

    def _read_counts(self) -> None:
        fd = self.popen.stdout.fileno()
        while (data := _read_exactly(fd, _COUNT.size)) is not None:
            (written,) = _COUNT.unpack(data)
            self.done += written
            self.store._count(written)
        code = self.popen.wait()
        self.popen.stdout.close()
        with self.store._cond:
            lost = self.sent - self.done
        if lost or code:  # logged before flush() may return
            log.error("store writer %d ended with %d: %d receipt(s) (with their values) are "
                      "%s %s", self.popen.pid, code, lost, LOST_NOTE, self.store._db_path)
        self.store._count(lost)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exactly(fd: int, size: int) -> bytes | None:
    """`size` bytes, or None at the end of the pipe."""
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


# --- the child


ROWS_PER_TRANSACTION = 100_000  # receipts and values: 1,000 weather station packets, 1-2 s
# Rows one INSERT takes (VALUES (...), (...), ...): executemany steps the statement once per
# row, and SQLite's module lets go of the GIL and takes it back at every step.
ROWS_PER_INSERT = 500


class ReceiptWriter(BatchWriter):
    """Writes (device, receipt row, value rows): a receipt with its values, in one thread and
    one transaction."""

    # A fleet inserts at a thousand places of the table at once (each device's newest times),
    # so a transaction writes a page per device to the WAL, however few rows it has. Fewer,
    # larger transactions write each page once for more rows; a page cache that holds those
    # pages saves reading them back.
    cache_kib = 64 * 1024
    # A transaction a second at most, unless a whole one waits: each writes those pages again,
    # so back-to-back small ones (what arrived while the last ran) wrote 240 MB/s at 10,000
    # msg/s. A second keeps the table (the pages' and research's source) a second behind at most.
    linger_s = 1.0

    # While it keeps up, the writer rests between two INSERT statements as long as the last
    # one took, for the first `paced_s` of a transaction: its CPU (0.2 s a second at 10,000
    # msg/s) comes in short turns spread over the second, not in one burst. On a machine of
    # two CPUs that burst slowed the event loop's acks once a second: ack p99 97-132 ms
    # unpaced, 76-94 ms paced for 0.5 s, runs taken in turns; paced for 0.8 s (the inserts
    # then rest to their end), 55-74 ms against 72-77. A writer behind (a whole transaction
    # waits) and a transaction past `paced_s` go at full speed.
    paced_s = 0.8
    _paced = False  # this transaction rests between statements

    def _take(self) -> list[tuple]:
        whole = self._whole()
        self._paced = whole is None
        taken = whole or len(self._pending)
        batch = self._pending[:taken]
        del self._pending[:taken]
        return batch

    def _behind(self) -> bool:
        return self._whole() is not None

    def _whole(self) -> int | None:
        """How many of the queued receipts make a whole transaction; None: fewer are queued.

        Receipts are weighed by the value rows they carry (a TCP packet's 90, a WebSocket
        message's few): up to ROWS_PER_TRANSACTION rows. Each transaction writes a page per
        device to the WAL, so at 10,000 msg/s transactions of 1,000 messages fell behind (14.6 s
        after a 30 s run) where these keep up."""
        rows = 0
        for taken, (_, _, values) in enumerate(self._pending, 1):
            rows += 1 + len(values)
            if rows >= ROWS_PER_TRANSACTION:
                return taken
        return None

    def _write(self, conn: sqlite3.Connection, batch: list[tuple]) -> None:
        began = time.monotonic()
        values = [row for _, _, rows in batch for row in rows]
        receipts = [receipt for _, receipt, _ in batch]
        for sql, table_rows in ((db.INSERT_MEASUREMENT, values), (db.INSERT_RECEIPT, receipts)):
            for statement, parameters in _statements(sql, table_rows):
                started = time.monotonic()
                conn.execute(statement, parameters)
                now = time.monotonic()
                if self._paced and now - began < self.paced_s:
                    time.sleep(now - started)


def _statements(sql: str, rows: list[tuple]) -> Iterator[tuple[str, list]]:
    """What conn.executemany(sql, rows) does, for an INSERT of one VALUES (?, ...) group, as
    (statement, parameters) of ROWS_PER_INSERT rows each."""
    group = sql[sql.rindex("("):]
    for start in range(0, len(rows), ROWS_PER_INSERT):
        part = rows[start:start + ROWS_PER_INSERT]
        yield sql + f", {group}" * (len(part) - 1), list(chain.from_iterable(part))


class _CountingWriter(ReceiptWriter):
    """Tells the parent, after each transaction, how many receipts it wrote (or gave up)."""

    def _insert(self, batch: list[tuple]) -> bool:
        if not super()._insert(batch):
            return False  # kept, to be tried again: not written yet
        with contextlib.suppress(OSError):  # the parent is gone: nobody to tell
            _write_all(sys.stdout.fileno(), _COUNT.pack(len(batch)))
        return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=f"python -m {__name__}",
                                description="The measurement store's writer (started by the "
                                            "gateway process): pickled rows on stdin.")
    p.add_argument("db_path", type=Path)
    p.add_argument("busy_timeout_ms", type=int)
    p.add_argument("log_level")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s store-writer %(levelname)s %(name)s: %(message)s")
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    os.nice(NICENESS)
    writer = _CountingWriter(args.db_path, args.busy_timeout_ms, db.INSERT_RECEIPT,
                             "gateway receipt (and its values)", LOST_NOTE, unit_at=0)
    fd = sys.stdin.fileno()
    while (head := _read_exactly(fd, _COUNT.size)) is not None:
        frame = _read_exactly(fd, _COUNT.unpack(head)[0])
        if frame is None:  # the parent died within a frame
            break
        writer.submit_many(pickle.loads(frame))
    writer.flush(None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
