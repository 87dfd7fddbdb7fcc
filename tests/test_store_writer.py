"""The measurement store's writer: its transactions, and the child process that runs them."""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from co2unit_server.database import db, db_writer, store_writer
from co2unit_server.database.rows import Receipt
from co2unit_server.database.store_writer import ProcessStore, ReceiptWriter


def _receipt(n: int, values: int = 1) -> tuple[Receipt, list[tuple]]:
    source = f"ws/lab-1/0000.log:{n}"
    ts = f"2026-12-06T01:{n // 60:02d}:{n % 60:02d}.000000"
    return (Receipt(source, "lab-1", "ws", ts, "ok", values, None, f"seq {n}"),
            [("lab-1", "ws", ts, f"v{i}", 400.0 + n, source, None) for i in range(values)])


def _item(n: int, values: int = 1) -> tuple:
    """What ReceiptWriter queues for a receipt: (device, receipt row, value rows)."""
    receipt, rows = _receipt(n, values)
    return (receipt.device, receipt.row(), rows)


def _counts(config) -> tuple[int, int]:
    with sqlite3.connect(config.db_path) as conn:
        return (conn.execute("SELECT count(*) FROM gateway_receipts").fetchone()[0],
                conn.execute("SELECT count(*) FROM measurements").fetchone()[0])


@pytest.fixture
def writer(config):
    writer = ReceiptWriter(config.db_path, 1000, db.INSERT_RECEIPT, "r", "lost")
    yield writer
    writer.flush(10)
    writer._close()


@pytest.fixture
def store(config):
    store = ProcessStore(config.db_path, 1000, "INFO")
    yield store
    store.close()


# --- the transactions (in this process: the child runs the same class)


def test_a_batch_longer_than_one_insert_is_stored_whole(config, writer, monkeypatch):
    monkeypatch.setattr(store_writer, "ROWS_PER_INSERT", 4)
    writer.submit_many([_item(n, values=5) for n in range(3)])  # statements of 4, 4, 4, 3
    assert writer.flush(10)
    assert _counts(config) == (3, 15)


def test_rows_queued_while_a_transaction_runs_gather_for_the_next(config, writer, monkeypatch):
    batches: list[int] = []
    real_write = ReceiptWriter._write
    monkeypatch.setattr(ReceiptWriter, "_write",
                        lambda self, conn, batch: (batches.append(len(batch)),
                                                   real_write(self, conn, batch)))
    writer.submit(_item(1))
    assert writer.flush(10)
    # The writer now lingers (linger_s) before its next transaction: these two share it.
    writer.submit_many([_item(2)])
    writer.submit_many([_item(3), _item(4)])
    assert writer.flush(10)
    assert batches == [1, 3]
    assert _counts(config) == (4, 4)


def test_transactions_are_bounded_by_rows_and_a_writer_behind_does_not_linger(
        config, writer, monkeypatch):
    events: list[object] = []
    real_write = ReceiptWriter._write
    monkeypatch.setattr(ReceiptWriter, "_write",
                        lambda self, conn, batch: (events.append(len(batch)),
                                                   real_write(self, conn, batch)))
    monkeypatch.setattr(db_writer.time, "sleep", lambda s: events.append(f"sleep {s:g}"))
    monkeypatch.setattr(store_writer, "ROWS_PER_TRANSACTION", 10)
    writer.submit_many([_item(n) for n in range(12)])  # a receipt and a value each: 2 rows
    assert writer.flush(30)
    # No sleep while a whole transaction waits; the rest waits out the second since the
    # last one began.
    assert events[:2] == [5, 5]
    assert events[2].startswith("sleep 0.") and events[3] == 2
    assert _counts(config) == (12, 12)


def test_transactions_begin_a_second_apart_at_most(config, writer, monkeypatch):
    begun: list[float] = []
    real_insert = ReceiptWriter._insert
    monkeypatch.setattr(ReceiptWriter, "_insert",
                        lambda self, batch: (begun.append(time.monotonic()),
                                             real_insert(self, batch)))
    end = time.monotonic() + 2.5
    n = 0
    while time.monotonic() < end:  # a receipt every 10 ms: rows keep arriving
        writer.submit(_item(n))
        n += 1
        time.sleep(0.01)
    assert writer.flush(10)
    assert len(begun) in (3, 4)
    assert all(b - a >= writer.linger_s - 0.01 for a, b in itertools.pairwise(begun))
    assert _counts(config) == (n, n)


def _rests_in_transactions(writer, monkeypatch) -> list[list[float]]:
    """Each transaction's rests between its statements (the writer's sleeps, not taken)."""
    transactions: list[list[float]] = []
    writing = False
    real_write = ReceiptWriter._write

    def write(self, conn, batch) -> None:
        nonlocal writing
        transactions.append([])
        writing = True
        try:
            real_write(self, conn, batch)
        finally:
            writing = False

    def sleep(seconds: float) -> None:
        if writing:
            transactions[-1].append(seconds)

    monkeypatch.setattr(ReceiptWriter, "_write", write)
    monkeypatch.setattr(store_writer.time, "sleep", sleep)  # the linger's sleep is not taken
    return transactions


def test_a_writer_that_keeps_up_rests_between_statements(config, writer, monkeypatch):
    monkeypatch.setattr(store_writer, "ROWS_PER_INSERT", 2)
    transactions = _rests_in_transactions(writer, monkeypatch)
    writer.submit_many([_item(n, values=2) for n in range(3)])
    assert writer.flush(10)
    # 6 values and 3 receipts: statements of 2, 2, 2 and 2, 1, a rest after each.
    assert len(transactions) == 1 and len(transactions[0]) == 5
    assert all(rest > 0 for rest in transactions[0])
    assert _counts(config) == (3, 6)


def test_a_writer_behind_or_late_in_its_transaction_does_not_rest(config, writer,
                                                                    monkeypatch):
    monkeypatch.setattr(store_writer, "ROWS_PER_INSERT", 2)
    monkeypatch.setattr(store_writer, "ROWS_PER_TRANSACTION", 6)
    transactions = _rests_in_transactions(writer, monkeypatch)
    writer.submit_many([_item(n) for n in range(3)])  # a whole transaction: it is behind
    assert writer.flush(10)
    monkeypatch.setattr(writer, "paced_s", 0.0)  # and one that is never young enough
    writer.submit_many([_item(n) for n in range(3, 5)])
    assert writer.flush(10)
    assert transactions == [[], []]
    assert _counts(config) == (5, 5)


def test_the_writer_keeps_a_page_cache_for_a_fleet(writer):
    conn = writer._connection()
    assert conn.execute("PRAGMA cache_size").fetchone() == (-writer.cache_kib,)
    assert writer.cache_kib >= 32 * 1024


# --- the child process


def _child_pid(store: ProcessStore) -> int:
    assert store._child is not None
    return store._child.popen.pid


def test_rows_reach_the_tables_through_a_child_that_close_ends(config, store):
    assert store._child is None  # started by the first rows, not before
    store.add_many([_receipt(n, values=3) for n in range(2500)])  # frames of FRAME_ITEMS
    assert store.flush(30)
    assert _counts(config) == (2500, 7500)
    child = store._child.popen
    assert child.poll() is None
    store.close()
    assert child.returncode == 0
    with pytest.raises(RuntimeError, match="closed"):
        store.add(*_receipt(9999))


def test_the_child_writes_at_a_lower_priority(store):
    store.add(*_receipt(1))
    assert store.flush(10)
    assert os.getpriority(os.PRIO_PROCESS, _child_pid(store)) == (
        os.getpriority(os.PRIO_PROCESS, 0) + store_writer.NICENESS)


def test_the_child_outlives_sigint_and_sigterm_until_its_rows_are_handed_over(config, store):
    store.add(*_receipt(1))
    assert store.flush(10)
    pid = _child_pid(store)
    os.kill(pid, signal.SIGINT)  # a Ctrl-C or a systemctl stop reaches the whole group
    os.kill(pid, signal.SIGTERM)
    store.add_many([_receipt(n) for n in range(2, 5)])
    assert store.flush(10)
    assert store._child.popen.pid == pid and store._child.running()
    assert _counts(config) == (4, 4)


def test_a_child_that_dies_is_logged_with_its_rows_and_replaced(config, store, caplog):
    store.add(*_receipt(1))
    assert store.flush(10)
    pid = _child_pid(store)
    os.kill(pid, signal.SIGSTOP)  # it takes nothing more in: these wait in its pipe
    store.add_many([_receipt(n) for n in range(2, 5)])
    deadline = time.monotonic() + 10
    while store._child.sent < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    with caplog.at_level(logging.ERROR, logger="co2unit_server.database.store_writer"):
        os.kill(pid, signal.SIGKILL)
        assert store.flush(10)  # given up: flush does not wait for them forever
    assert f"store writer {pid} ended with -9: 3 receipt(s)" in caplog.text
    assert "in the raw log (the next import stores them)" in caplog.text
    store.add(*_receipt(5))  # a new child
    assert store.flush(10)
    assert _child_pid(store) != pid
    assert _counts(config) == (2, 2)  # 1 and 5; 2-4 are for the next import


def test_a_child_whose_parent_died_writes_what_it_has_and_ends(config):
    frame = pickle.dumps([_item(n, values=2) for n in range(3)])
    child = subprocess.run(
        [sys.executable, "-m", "co2unit_server.database.store_writer", str(config.db_path), "1000",
         "INFO"],
        input=store_writer._COUNT.pack(len(frame)) + frame, capture_output=True, timeout=30)
    assert child.returncode == 0, child.stderr
    assert child.stdout == store_writer._COUNT.pack(3)  # what it told its parent
    assert _counts(config) == (3, 6)


def test_a_store_closed_without_rows_starts_no_child(store):
    store.close()
    assert store._child is None


def test_a_child_that_cannot_start_is_logged_and_its_rows_given_up(store, tmp_path, caplog):
    store._command = [str(tmp_path / "no-such-python")]
    with caplog.at_level(logging.ERROR, logger="co2unit_server.database.store_writer"):
        store.add_many([_receipt(1), _receipt(2)])
        assert store.flush(10)
    assert "store writer could not start" in caplog.text and "2 receipt(s)" in caplog.text


def test_a_full_disk_keeps_the_rows_and_writes_them_once_there_is_room(small_fs, capfd):
    disk = small_fs(4 << 20)
    db_path = disk.path / "db.sqlite3"
    store = ProcessStore(db_path, 1000, "INFO")
    try:
        store.add_many([_receipt(n) for n in range(10)])
        assert store.flush(10)
        disk.fill()
        store.add_many([_receipt(n, values=5) for n in range(10, 3010)])
        assert not store.flush(3)  # not written, and not given up either
        disk.empty()
        assert store.flush(10)
    finally:
        store.close()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM gateway_receipts").fetchone()[0] == 3010
        assert conn.execute("SELECT count(*) FROM measurements").fetchone()[0] == 10 + 3000 * 5
    err = capfd.readouterr().err
    assert err.count("database or disk is full") == 1, err  # a line when it fills...
    assert err.count("has room again") == 1 and "Traceback" not in err  # ...and when it empties


def test_what_counts_as_a_full_disk():
    def error(code: int) -> sqlite3.OperationalError:
        exc = sqlite3.OperationalError("database or disk is full")
        exc.sqlite_errorcode = code
        return exc

    assert db_writer.disk_full(error(sqlite3.SQLITE_FULL))
    assert db_writer.disk_full(error(sqlite3.SQLITE_IOERR_SHMSIZE))  # growing -shm failed
    assert not db_writer.disk_full(error(sqlite3.SQLITE_CORRUPT))
    assert not db_writer.disk_full(error(sqlite3.SQLITE_IOERR_WRITE))
    assert db_writer.disk_full(OSError(28, "No space left on device"))
    assert not db_writer.disk_full(OSError(5, "Input/output error"))


def test_a_store_closed_on_a_full_disk_ends_soon_and_says_what_it_did_not_write(small_fs,
                                                                               caplog):
    disk = small_fs(4 << 20)
    store = ProcessStore(disk.path / "db.sqlite3", 1000, "INFO")
    store.add_many([_receipt(n) for n in range(10)])
    assert store.flush(10)
    disk.fill()
    store.add_many([_receipt(n, values=5) for n in range(10, 3010)])
    began = time.monotonic()
    store.close(2.0)
    assert time.monotonic() - began < 2.0 + store_writer.END_UNWRITTEN_S + 2.0
    lost = [r.getMessage() for r in caplog.records if "not in" in r.getMessage()]
    assert len(lost) == 1 and ": 3000 receipt(s) (with their values) are in the raw log" in lost[0]
