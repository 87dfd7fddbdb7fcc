"""The ping log: TSV format and rotation, the pings table, and reading the tail."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from datetime import datetime, timedelta
from pathlib import Path

from co2unit_server.core.errors import ApiError, ErrorCode
from co2unit_server.records.pinglog import Ping, PingLog, ping_files, tail_lines

from conftest import HW_ID

T0 = datetime(2026, 11, 21, 3, 10, 0)


def make_log(tmp_path: Path, rotate_bytes: int = 100 * 1024) -> PingLog:
    var = tmp_path / "var"
    return PingLog(var / "pings", rotate_bytes, var / "locks" / "pings.lock", var / "db.sqlite3",
                   busy_timeout_ms=100)


def ping(i: int = 0, **kw) -> Ping:
    fields = {"ts": T0 + timedelta(seconds=i), "hw_id": HW_ID, "site_code": "varanger-03",
              "rssi_raw": 12, "rssi_dbm": -89, "ber_raw": 99}
    fields.update(kw)
    return Ping(**fields)


def db_rows(tmp_path: Path, log: PingLog) -> list[tuple]:
    assert log.table.flush(timeout=10)
    with sqlite3.connect(tmp_path / "var" / "db.sqlite3") as conn:
        return conn.execute("SELECT * FROM pings ORDER BY ping_ts").fetchall()


def test_tsv_line_has_the_reference_columns_plus_ber_raw(tmp_path):
    log = make_log(tmp_path)
    log.record(ping(rssi_raw=None, rssi_dbm=None, ber_raw=None, site_code="None"))
    text = (tmp_path / "var" / "pings" / "pings-0000.tsv").read_text()
    assert text == f"2026-11-21T03:10:00.000000\t{HW_ID}\tNone\tNone\tNone\tNone\n"


def test_ping_goes_into_the_database_with_integers_and_nulls(tmp_path):
    log = make_log(tmp_path)
    log.record(ping(0))
    log.record(ping(1, site_code="None", rssi_raw=None, rssi_dbm=None, ber_raw=None))
    assert db_rows(tmp_path, log) == [
        ("2026-11-21T03:10:00.000000", "2026-11-21", "03:10:00", HW_ID, "varanger-03", 12, -89,
         99),
        ("2026-11-21T03:10:01.000000", "2026-11-21", "03:10:01", HW_ID, None, None, None, None),
    ]


def test_control_characters_in_a_nickname_cannot_break_the_tsv(tmp_path):
    log = make_log(tmp_path)
    log.record(ping(site_code="bad\tnick\nname"))
    lines = (tmp_path / "var" / "pings" / "pings-0000.tsv").read_text().splitlines()
    assert len(lines) == 1 and lines[0].split("\t")[2] == "bad nick name"


def test_rotates_to_the_next_zero_padded_file(tmp_path):
    log = make_log(tmp_path, rotate_bytes=200)
    for i in range(10):
        log.record(ping(i))
    files = ping_files(tmp_path / "var" / "pings")
    assert [f.name for f in files] == ["pings-0000.tsv", "pings-0001.tsv", "pings-0002.tsv",
                                       "pings-0003.tsv"]
    assert all(f.stat().st_size < 200 + 80 for f in files)
    assert sum(len(f.read_text().splitlines()) for f in files) == 10


def test_processes_appending_at_once_rotate_to_the_same_files(tmp_path):
    # Two PingLogs on one directory stand for two uWSGI processes, each with its own idea
    # of the current file: neither may start a file of its own or write into an old one.
    first, second = make_log(tmp_path, rotate_bytes=200), make_log(tmp_path, rotate_bytes=200)
    for i in range(20):
        (first if i % 3 else second).record(ping(i))
    files = ping_files(tmp_path / "var" / "pings")
    assert [f.name for f in files] == [f"pings-{n:04d}.tsv" for n in range(len(files))]
    line_bytes = len(ping(0).tsv_line())
    assert all(f.stat().st_size < 200 + line_bytes for f in files)
    lines = [line for f in files for line in f.read_text().splitlines()]
    assert lines == [ping(i).tsv_line().rstrip("\n") for i in range(20)]


def test_a_ping_file_moved_away_is_followed_by_a_new_one(tmp_path):
    log = make_log(tmp_path)
    log.record(ping(0))
    pings_dir = tmp_path / "var" / "pings"
    (pings_dir / "pings-0000.tsv").rename(tmp_path / "archived.tsv")
    log.record(ping(1))
    assert (pings_dir / "pings-0000.tsv").read_text() == ping(1).tsv_line()


def test_a_writer_that_cannot_start_costs_the_row_not_the_ping(tmp_path, caplog,
                                                               monkeypatch):
    def no_threads_left(self):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", no_threads_left)
    log = make_log(tmp_path)
    log.record(ping(0))  # must not raise: the unit needs its 200
    assert (tmp_path / "var" / "pings" / "pings-0000.tsv").read_text() == ping(0).tsv_line()
    assert "in the TSV log but not in the database" in caplog.text


def test_a_burst_of_pings_all_reach_the_table(tmp_path):
    log = make_log(tmp_path)
    for i in range(300):
        log.record(ping(i))
    rows = db_rows(tmp_path, log)
    assert [row[0] for row in rows] == [ping(i).ts_text for i in range(300)]


def _record_in_child(log: PingLog, conn) -> None:
    log.record(ping(1))
    conn.send(log.table.flush(timeout=10))


def test_a_forked_process_writes_with_a_writer_of_its_own(tmp_path):
    # uWSGI forks its workers from the master: the writer thread does not come along.
    log = make_log(tmp_path)
    log.record(ping(0))
    assert log.table.flush(timeout=10)
    fork = multiprocessing.get_context("fork")
    receiver, sender = fork.Pipe(duplex=False)
    child = fork.Process(target=_record_in_child, args=(log, sender))
    child.start()
    assert receiver.poll(20) and receiver.recv() is True
    child.join(timeout=20)
    assert len(db_rows(tmp_path, log)) == 2


def test_database_failure_keeps_the_tsv_line(tmp_path, caplog):
    log = make_log(tmp_path)
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "db.sqlite3").write_bytes(b"this is not a database" * 100)
    log.record(ping())
    assert log.table.flush(timeout=10)
    assert len((tmp_path / "var" / "pings" / "pings-0000.tsv").read_text().splitlines()) == 1
    assert "in the TSV log but not in" in caplog.text


def test_unwritable_ping_log_still_reaches_the_database(tmp_path, caplog):
    log = make_log(tmp_path)
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "pings").write_text("a file where the log directory should be")
    log.record(ping())
    assert len(db_rows(tmp_path, log)) == 1
    assert "could not append the ping" in caplog.text


def test_locked_database_keeps_the_tsv_line(tmp_path, caplog):
    log = make_log(tmp_path)
    log.record(ping(0))
    assert log.table.flush(timeout=10)
    holder = sqlite3.connect(tmp_path / "var" / "db.sqlite3", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        log.record(ping(1))
        assert log.table.flush(timeout=10)  # given up after the busy timeout
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert len((tmp_path / "var" / "pings" / "pings-0000.tsv").read_text().splitlines()) == 2
    assert "in the TSV log but not in" in caplog.text
    log.record(ping(2))
    assert len(db_rows(tmp_path, log)) == 2


def test_a_replaced_database_file_is_reopened(tmp_path):
    log = make_log(tmp_path)
    log.record(ping(0))
    assert log.table.flush(timeout=10)
    for suffix in ("", "-wal", "-shm"):
        Path(str(tmp_path / "var" / "db.sqlite3") + suffix).unlink(missing_ok=True)
    log.record(ping(1))
    assert [row[0] for row in db_rows(tmp_path, log)] == ["2026-11-21T03:10:01.000000"]


def test_recent_reads_newest_first_across_rotated_files(tmp_path):
    log = make_log(tmp_path, rotate_bytes=300)
    for i in range(30):
        log.record(ping(i))
    recent = log.recent(20)
    assert len(recent) == 20
    assert recent[0].startswith("2026-11-21T03:10:29")
    assert recent[-1].startswith("2026-11-21T03:10:10")
    assert log.recent(100)[-1].startswith("2026-11-21T03:10:00")
    assert make_log(tmp_path / "empty").recent(20) == []


def test_tail_lines_of_a_long_file(tmp_path):
    path = tmp_path / "long.tsv"
    path.write_text("".join(f"line {i}\n" for i in range(5000)))
    assert tail_lines(path, 3) == ["line 4997", "line 4998", "line 4999"]
    assert tail_lines(path, 0) == []


def test_a_ping_that_cannot_be_written_is_507_and_not_recorded(small_fs):
    disk = small_fs(1 << 20)
    log = make_log(disk.path)
    log.record(ping(0))
    disk.fill()
    refused = 0
    for i in range(1, 200):  # the file's last page takes a few lines more, then nothing
        try:
            log.record(ping(i, site_code="x" * 200))
        except ApiError as exc:
            assert exc.status == 507 and exc.code is ErrorCode.INSUFFICIENT_STORAGE
            refused += 1
    assert refused > 100
    disk.empty()
    log.record(ping(200))
    recorded = (disk.path / "var" / "pings" / "pings-0000.tsv").read_text().splitlines()
    assert len(recorded) == 201 - refused  # each ping answered 200 is in the log, whole
    assert len(db_rows(disk.path, log)) == len(recorded)  # and in the table, once there is room
