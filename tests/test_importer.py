"""The importer: values, NULLs, drop counts, traceability and incremental behaviour."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import datetime

import pytest
from old_schema_fixtures import build_old_schema_tree
from toolchain_fixtures import (
    A_DROPPED,
    A_IMPORTED,
    A_LINES,
    A_PARTIAL,
    A_PARTIAL_CUT,
    HW_A,
    HW_B,
    HW_D,
    RAW,
    RAW_VALUES,
    SITE,
    SUPERSEDED,
    SUPERSEDED_ONLY,
    TREE_READINGS,
    Tree,
    append,
    build_tree,
    import_tree,
    open_db,
    reading,
    table_content,
    write,
)

from co2unit_server.database import db
from co2unit_server.database.state import transaction
from co2unit_server.records.pinglog import Ping, PingLog
from co2unit_server.toolchain.importer import STAGES, errorlogs, readings


@pytest.fixture
def tree(tmp_path) -> Tree:
    return build_tree(tmp_path)


@pytest.fixture
def conn(tree: Tree):
    conn = open_db(tree)
    yield conn
    conn.close()


def _rows(conn: sqlite3.Connection, sql: str, *args) -> list[tuple]:
    return conn.execute(sql, args).fetchall()


def _log(conn: sqlite3.Connection, stage: str, outcome: str) -> dict[str, int]:
    rows = _rows(conn, "SELECT reason, sum(count) FROM import_log WHERE stage = ? AND outcome = ?"
                 " GROUP BY reason", stage, outcome)
    return dict(rows)


def _readings_dump(conn: sqlite3.Connection) -> list[tuple]:
    return _rows(conn, "SELECT unit_id, nickname, date, time, temp, flash_count, co2_01, co2_02, "
                 "co2_03, co2_10 FROM co2_readings ORDER BY unit_id, date, time")


def test_readings_values_nulls_and_drop_counts(tree, conn):
    reports = import_tree(tree, conn)
    a = {(r[2], r[3]): r for r in _rows(conn, "SELECT * FROM co2_readings WHERE unit_id = ?",
                                        HW_A)}
    assert len(a) == A_IMPORTED + 1  # + the reading only the superseded copy has
    assert a[("2026-11-01", "13:00:10")][4:8] == (23.4375, 1, 680, 700)
    assert a[("2026-11-01", "13:30:10")][4:7] == (None, 0, None)  # `None` -> NULL
    assert a[("2026-11-01", "14:00:10")][6:8] == (0, 200010)  # glitches kept in the table
    assert a[("2026-11-01", "14:30:10")][4] == 85.0
    assert a[("2026-11-01", "15:00:10")][1] is None  # DEFAULTNICK
    assert a[("2026-11-01", "15:30:10")][4] is None and a[("2026-11-01", "15:30:10")][7] is None
    assert ("1970-01-01", "00:00:42") not in a
    assert isinstance(a[("2026-11-01", "13:00:10")][6], int)  # affinity made the text a number
    assert _log(conn, "readings", "dropped") == A_DROPPED
    assert _log(conn, "readings", "nulled") == {"empty field": 1, "truncated field": 1,
                                                "nickname ending in NICK": 1}
    assert _log(conn, "readings", "recovered") == {"row cut off": 2,
                                                   "non-printing bytes before a row": 1}
    assert _log(conn, "readings", "noted") == {"blank line": 1}
    assert sum(A_DROPPED.values()) == reports["readings"].total("dropped")
    # Every physical line of A's file has exactly one outcome.
    assert (reports["readings"].total("dropped") + A_IMPORTED
            + reports["readings"].total("noted")) == len(A_LINES)


def test_power_loss_and_nul_block_keep_the_intact_row(tree, conn):
    import_tree(tree, conn)
    times = [t for (t,) in _rows(conn, "SELECT time FROM co2_readings WHERE unit_id = ? AND "
                                 "date = '2026-11-01' ORDER BY time", HW_A)]
    assert "16:30:10" in times and "17:00:10" in times  # recovered
    assert "16:00:10" not in times  # the cut row is not invented
    row = _rows(conn, "SELECT temp, co2_01, co2_10 FROM co2_readings WHERE time = '16:30:10'")
    assert row == [(5.5, 700, 700)]  # columns not shifted
    units = {u for (u,) in _rows(conn, "SELECT DISTINCT unit_id FROM co2_readings")}
    assert all(len(u) == 20 for u in units)  # no unit invented from garbage


def test_every_row_traces_back_to_its_file_and_line(tree, conn):
    import_tree(tree, conn)
    rows = _rows(conn, "SELECT r.unit_id, r.date, r.time, f.path, r.src_line FROM co2_readings r"
                 " JOIN import_files f ON f.id = r.src_file")
    assert rows
    for unit, date, time, path, line_no in rows:
        file = tree.data_dir / path.split(":", 1)[1]
        line = file.read_bytes().split(b"\n")[line_no - 1].decode("utf-8", "replace")
        assert f"{unit}\t" in line and f"\t{date}\t{time}\t" in line
    dropped = _rows(conn, "SELECT f.path, d.src_line, d.reason FROM dropped_lines d "
                    "JOIN import_files f ON f.id = d.src_file WHERE d.reason LIKE 'dropped:%'")
    assert ("data:" + f"{HW_A}/data/readings/readings-0000.tsv", 4,
            "dropped: date before 2011 (clock not set)") in dropped


def test_superseded_copy_and_re_push_are_one_reading(tree, conn):
    reports = import_tree(tree, conn)
    assert _rows(conn, "SELECT count(*) FROM co2_readings WHERE unit_id = ? AND date = ? AND "
                 "time = ?", HW_A, "2026-11-01", "13:00:10") == [(1,)]
    assert _rows(conn, "SELECT count(*) FROM co2_readings WHERE date = '2026-10-31'") == [(1,)]
    assert reports["readings"].total("duplicate") == 1


def test_partial_last_line_is_imported_once_completed(tree, conn):
    import_tree(tree, conn)
    query = "SELECT count(*) FROM co2_readings WHERE time = '18:30:10'"
    assert _rows(conn, query) == [(0,)]
    append(tree.readings(HW_A), A_PARTIAL[A_PARTIAL_CUT:])  # the rest, still no newline
    import_tree(tree, conn)
    assert _rows(conn, query) == [(0,)]
    append(tree.readings(HW_A), "\n")
    reports = import_tree(tree, conn)
    assert _rows(conn, query) == [(1,)]
    assert reports["readings"].total("imported") == 1
    line = _rows(conn, "SELECT src_line FROM co2_readings WHERE time = '18:30:10'")
    assert line == [(len(A_LINES) + 1,)]


def test_rerun_with_nothing_new_reads_no_file(tree, conn):
    import_tree(tree, conn)
    reports = import_tree(tree, conn)
    for report in reports.values():
        assert report.files_read == 0 and report.files_replaced == 0
        assert report.total("imported") == 0 and report.total("deleted") == 0


def test_append_and_new_file_are_imported(tree, conn):
    import_tree(tree, conn)
    path = tree.readings(HW_B)
    append(path, reading(HW_B, "varanger-04", "2026-11-07", "00:00:10") + "\n")
    write(tree.readings(HW_B, "readings-0001.tsv"),
          reading(HW_B, "varanger-04", "2026-11-08", "00:00:10") + "\n")
    reports = import_tree(tree, conn)
    assert reports["readings"].files_read == 2
    assert reports["readings"].total("imported") == 2
    assert _rows(conn, "SELECT count(*) FROM co2_readings WHERE unit_id = ?", HW_B) == [(5,)]
    assert _rows(conn, "SELECT src_line FROM co2_readings WHERE date = '2026-11-07'") == [(4,)]


@pytest.mark.parametrize("change", ["truncated", "replaced", "rewritten in place"])
def test_truncated_or_replaced_file_is_imported_again(tree, conn, change):
    import_tree(tree, conn)
    path = tree.readings(HW_B)
    new = reading(HW_B, "varanger-04", "2026-12-01", "00:00:10") + "\n"
    if change == "truncated":
        path.write_text(new)
    elif change == "replaced":
        path.unlink()
        write(path, new)
    else:
        old = path.read_bytes()
        # Same size, same inode, different bytes.
        path.write_bytes(old.replace(b"varanger-04", b"varanger-05"))
    reports = import_tree(tree, conn)
    assert reports["readings"].files_replaced == 1
    rows = _rows(conn, "SELECT nickname, date FROM co2_readings WHERE unit_id = ? ORDER BY date",
                 HW_B)
    if change == "rewritten in place":
        assert [n for n, _ in rows] == ["varanger-05"] * 3
    else:
        assert rows == [("varanger-04", "2026-12-01")]


def test_new_sd_card_moves_files_to_superseded_and_nothing_is_lost(tree, conn):
    """The server moves data/readings aside; the unit starts a new sequence over the name."""
    import_tree(tree, conn)
    before = _readings_dump(conn)
    moved = tree.data_dir / HW_B / "superseded" / "20261110T000000.000000Z" / "data"
    moved.mkdir(parents=True)
    shutil.move(tree.readings(HW_B).parent, moved / "readings")
    write(tree.readings(HW_B), reading(HW_B, "varanger-04", "2026-11-10", "00:00:10") + "\n")
    reports = import_tree(tree, conn)
    after = _readings_dump(conn)
    assert set(before) < set(after) and len(after) == len(before) + 1
    assert reports["readings"].files_replaced == 1
    paths = {p for (p,) in _rows(conn, "SELECT DISTINCT f.path FROM co2_readings r JOIN "
                                 "import_files f ON f.id = r.src_file WHERE r.unit_id = ?", HW_B)}
    assert all("superseded/20261110" in p or p.endswith("readings-0000.tsv") for p in paths)
    assert any("superseded/20261110" in p for p in paths)


def test_vanished_file_rows_come_back_from_a_sibling_copy(tree, conn):
    """Rows a deleted file held hid the same readings in the superseded copy: restored."""
    import_tree(tree, conn)
    tree.readings(HW_A).unlink()
    import_tree(tree, conn)
    rows = _rows(conn, "SELECT date, time FROM co2_readings WHERE unit_id = ? ORDER BY date",
                 HW_A)
    assert rows == [("2026-10-31", "12:00:10"), ("2026-11-01", "13:00:10")]


def test_rows_hidden_in_a_growing_copy_come_back_when_their_file_goes(tree, conn):
    """The superseded copy repeats a row of the file that goes, and is itself still growing:
    it is read again whole, not only its new lines."""
    import_tree(tree, conn)
    superseded = tree.readings(HW_A, under=SUPERSEDED)
    append(superseded, reading(HW_A, "varanger-03", "2026-10-31", "12:30:10") + "\n")
    tree.readings(HW_A).unlink()
    import_tree(tree, conn)
    rows = _rows(conn, "SELECT date, time FROM co2_readings WHERE unit_id = ? ORDER BY date, "
                 "time", HW_A)
    assert rows == [("2026-10-31", "12:00:10"), ("2026-10-31", "12:30:10"),
                    ("2026-11-01", "13:00:10")]
    assert import_tree(tree, conn)["readings"].files_read == 0


def test_rows_hidden_in_a_copy_come_back_after_an_import_cut_short(tree, conn, monkeypatch):
    """Stopped (killed, a full disk) after the gone file's rows were deleted and before its
    sibling was read again: the next import still reads the sibling again."""
    import_tree(tree, conn)
    tree.readings(HW_A).unlink()

    def stopped(*args):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(readings, "parse_lines", stopped)
        with pytest.raises(KeyboardInterrupt):
            import_tree(tree, conn)
    import_tree(tree, conn)
    rows = _rows(conn, "SELECT date, time FROM co2_readings WHERE unit_id = ? ORDER BY date",
                 HW_A)
    assert rows == [("2026-10-31", "12:00:10"), ("2026-11-01", "13:00:10")]
    assert import_tree(tree, conn)["readings"].files_read == 0


def test_files_marked_for_reading_again_are_read_once_whatever_their_stat(tmp_path):
    """Every kind of source: the marked files are read again, on the same files with the same
    stat, what they gave is replaced (no row twice, dropped lines sampled anew), and once."""
    tree = build_old_schema_tree(tmp_path)
    conn = open_db(tree)
    import_tree(tree, conn)
    before = table_content(tree.db_dir / "db.sqlite3", skip=set())
    with transaction(conn):
        marked = {kind: db.mark_for_reread(conn, "test", kind) for kind in STAGES}
    reports = import_tree(tree, conn)
    assert {s: (r.files_read, r.files_replaced) for s, r in reports.items()} == {
        kind: (n, n) for kind, n in marked.items()}
    assert marked == {"readings": 5, "errors": 2, "pings": 2, "measurements": 4,
                      "deployments": 1}
    assert reports["readings"].counts[("deleted", "marked to be read again")] == 31
    assert table_content(tree.db_dir / "db.sqlite3", skip=set()) == before
    assert all(r.files_read == 0 for r in import_tree(tree, conn).values())
    conn.close()


def test_incremental_import_equals_import_from_scratch(tree, conn, tmp_path):
    lines = [line for line, _ in A_LINES]
    path = tree.readings(HW_A)
    path.write_bytes(b"")
    import_tree(tree, conn)
    for line in lines:  # pushed in chunks that cut lines anywhere
        half = len(line) // 2
        append(path, line[:half])
        import_tree(tree, conn)
        append(path, line[half:] + b"\n")
        import_tree(tree, conn)
    scratch = Tree(tmp_path / "scratch")
    shutil.copytree(tree.data_dir, scratch.data_dir)
    shutil.copytree(tree.db_dir / "pings", scratch.db_dir / "pings")
    other = open_db(scratch)
    import_tree(scratch, other)
    assert _readings_dump(conn) == _readings_dump(other)
    assert _rows(conn, "SELECT * FROM co2_bins ORDER BY 1, 2") == \
        _rows(other, "SELECT * FROM co2_bins ORDER BY 1, 2")
    drops = "SELECT reason, count(*) FROM dropped_lines GROUP BY reason ORDER BY reason"
    assert _rows(conn, drops) == _rows(other, drops)


def test_co2_bins_leave_out_glitches_and_fault_temperature(tree, conn):
    import_tree(tree, conn)
    bucket = int(datetime.fromisoformat("2026-11-01T14:00:10+00:00").timestamp()) // 10800
    co2_sum, co2_n, temp_sum, temp_n = _rows(
        conn, "SELECT co2_sum, co2_n, temp_sum, temp_n FROM co2_bins WHERE unit_id = ? AND "
        "bucket = ?", HW_A, bucket)[0]
    # 12:00-15:00 holds 13:00 (10 values), 13:30 (9: one None), 14:00 (8: 0 and 200010 out),
    # 14:30 (temperature 85.0 out).
    assert co2_n == 10 + 9 + 8 + 10
    assert co2_sum == 6990 + 6300 + 6400 + 7000
    assert (temp_sum, temp_n) == (23.4375 + 22.0, 2)


def test_pings_five_and_six_columns_and_other_servers(tree, conn):
    reports = import_tree(tree, conn)
    rows = _rows(conn, "SELECT ping_ts, unit_id, nickname, rssi_raw, rssi_dbm, ber_raw FROM pings"
                 " ORDER BY ping_ts")
    assert ("2026-11-01T03:11:00.000000", HW_B, None, None, None, None) in rows
    assert ("2026-11-02T03:12:00.500000", HW_D, None, 9, -95, None) in rows
    assert len(rows) == 4
    assert reports["pings"].total("duplicate") == 1
    assert _log(conn, "pings", "dropped") == {"wrong field count": 1}


def test_no_duplicates_of_pings_the_server_inserted_live(tree, conn):
    log = PingLog(tree.db_dir / "pings", 100 * 1024, tree.db_dir / "locks" / "pings.lock",
                  tree.db_dir / "db.sqlite3", 2000)
    log.record(Ping(datetime(2026, 11, 8, 3, 10, 0), HW_A, "varanger-03", 10, -93, None))
    log.record(Ping(datetime(2026, 11, 8, 3, 20, 0, 5), HW_B, "None"))
    assert log.table.flush(timeout=10)
    reports = import_tree(tree, conn)
    assert reports["pings"].total("duplicate") == 3  # two live ones and the other server's copy
    assert _rows(conn, "SELECT count(*), count(DISTINCT unit_id || ping_ts) FROM pings") == \
        [(6, 6)]


def test_error_logs_both_formats_inferred_dates_types_and_tracebacks(tree, conn):
    import_tree(tree, conn)
    rows = _rows(conn, "SELECT idate, itime, etype, odate, otime, level, message FROM error_logs"
                 " ORDER BY src_line")
    assert [r[2] for r in rows] == ["transmit", "uncaught", "watchdog", "signal", "backoff", None]
    assert rows[0][3:6] == ("2026-10-25", "03:11:24", "INFO")  # tuple date
    assert rows[1][6].startswith("Uncaught exception\nTraceback")
    assert rows[1][6].endswith("OSError: [Errno 113] EHOSTUNREACH")
    # 1970 entries get the last good date; their own stamp is kept.
    assert rows[2][:2] == ("2026-10-25", "03:12:00") and rows[2][3] == "1970-01-01"
    assert rows[3][:2] == ("2026-10-25", "03:12:00")
    assert _log(conn, "errors", "inferred") == {"date from the last good entry": 2}


def test_error_log_entry_completed_by_a_later_push(tree, conn):
    path = tree.data_dir / HW_A / "errors" / "errors-0001.txt"
    write(path, "----- (1970, 1, 1, 0, 0, 1, 3, 1) EXC   Uncaught exception\nTraceback\n")
    import_tree(tree, conn)
    append(path, "  File \"x.py\"\nValueError\n----- 2026-10-27 03:00:00 INFO  transmitting\n")
    reports = import_tree(tree, conn)
    rows = _rows(conn, "SELECT idate, etype, message FROM error_logs e JOIN import_files f ON "
                 "f.id = e.src_file WHERE f.path LIKE '%errors-0001.txt' ORDER BY src_line")
    # The last good date carries over from errors-0000.txt.
    assert rows == [("2026-10-26", "uncaught", 'Uncaught exception\nTraceback\n  File "x.py"\n'
                     "ValueError"), ("2026-10-27", "transmit", "transmitting")]
    assert reports["errors"].total("imported") == 1


def test_error_headline_parsing():
    assert errorlogs.headline("----- (2019, 10, 25, 3, 11, 24, 4, 298) EXC   boom") == \
        ("2019-10-25", "03:11:24", "EXC", "boom")
    assert errorlogs.headline("----- 2019-09-16 10:55:57 WARN  Signal quality 7") == \
        ("2019-09-16", "10:55:57", "WARN", "Signal quality 7")
    assert errorlogs.headline("  File 'x'") is None
    assert errorlogs.classify("Watchdog timeout") == "watchdog"


def test_deployments_comments_nulls_and_utc(tree, conn):
    import_tree(tree, conn)
    rows = _rows(conn, "SELECT unit_id, site, tier, status, start_ts, end_ts, note FROM "
                 "deploy_durations_tiered ORDER BY rowid")
    assert rows[0] == (HW_A, SITE, 3, "deployed", "2026-10-30 00:00:00", "2026-11-05 00:00:00",
                       "first # not a comment")
    assert rows[1][5] is None and rows[1][6] is None  # empty cells
    assert rows[2][1] is None and rows[2][5] == "2026-11-07 10:00:00"  # +02:00 -> UTC
    assert len(rows) == 6  # the commented row is not there, the bad tier is dropped
    assert _log(conn, "deployments", "dropped") == {"tier is not an integer": 1}


def test_deployment_table_saved_with_a_byte_order_mark(tree, conn):
    tree.deployments.write_bytes(b"\xef\xbb\xbf" + tree.deployments.read_bytes())
    import_tree(tree, conn)
    assert len(_rows(conn, "SELECT * FROM deploy_durations_tiered")) == 6
    assert _log(conn, "deployments", "dropped") == {"tier is not an integer": 1}


@pytest.mark.parametrize("edit", ["appended", "rewritten"])
def test_an_edited_deployment_table_keeps_one_sample_per_dropped_line(tree, conn, edit):
    import_tree(tree, conn)
    if edit == "appended":
        append(tree.deployments, f"{HW_D}\t\t{SITE}\t2\tdeployed\t2026-11-20\t\t\n")
    else:
        tree.deployments.write_text(tree.deployments.read_text().replace("first", "1st"))
    import_tree(tree, conn)
    assert _rows(conn, "SELECT d.src_line, d.reason FROM dropped_lines d JOIN import_files f "
                 "ON f.id = d.src_file WHERE f.kind = 'deployments'") == [
        (11, "dropped: tier is not an integer")]


def test_missing_deployment_file_gives_an_empty_table_and_a_message(tree, conn):
    import_tree(tree, conn)
    tree.deployments.unlink()
    out: list[str] = []
    import_tree(tree, conn, out)
    assert _rows(conn, "SELECT count(*) FROM deploy_durations_tiered") == [(0,)]
    assert any("no deployment table at" in line for line in out)


def test_progress_line_per_stage_names_rows_and_reasons(tree, conn):
    out: list[str] = []
    import_tree(tree, conn, out)
    assert [line.split(":")[0] for line in out] == ["readings", "errors", "pings",
                                                    "measurements", "deployments"]
    assert f"{TREE_READINGS} new rows" in out[0] and " s" in out[0]
    assert "date before 2011 (clock not set): 2" in out[0]
    assert f"; rows lost by 1 unit: {HW_A} {sum(A_DROPPED.values())};" in out[0]


RAW_SQL = ("SELECT raw_co2_filtered, raw_led_normalized, raw_led_signal, raw_zero_point, "
           "raw_sensor_temp FROM co2_readings WHERE unit_id = ? AND date = ? AND time = ?")


def test_21_field_rows_import_with_their_raw_values(tree, conn):
    import_tree(tree, conn)
    assert _rows(conn, RAW_SQL, HW_A, "2026-11-01", "18:20:10") == [RAW_VALUES]
    assert _rows(conn, RAW_SQL, HW_A, "2026-11-01", "18:25:10") == [RAW_VALUES]  # recovered
    assert _rows(conn, RAW_SQL, HW_A, "2026-11-01", "18:21:10") == [(None,) * 5]  # `None`
    assert _rows(conn, RAW_SQL, HW_A, "2026-11-01", "13:00:10") == [(None,) * 5]  # 16 fields
    # The 16 common fields of a 21-field row land in the same columns as a 16-field row's.
    assert _rows(conn, "SELECT temp, flash_count, co2_01, co2_10 FROM co2_readings WHERE "
                 "time = '18:20:10'") == [(4.5, 1, 700, 700)]
    assert all(type(v) is int for v in _rows(conn, RAW_SQL, HW_A, "2026-11-01", "18:20:10")[0])
    for time in ("18:22:10", "18:23:10", "00:01:00"):  # damaged raw, 18 fields, clock not set
        assert _rows(conn, "SELECT count(*) FROM co2_readings WHERE time = ?", time) == [(0,)]


@pytest.mark.parametrize("raw", [None, RAW, "None\t1\t2\tNone\t-4"])
def test_fast_path_and_slow_path_agree(raw):
    """A clean line gives the same row through the one-regex path and through parse_line."""
    from co2unit_server.toolchain.importer.report import StageReport

    line = reading(HW_A, "varanger-03", "2026-11-01", "13:00:10", raw=raw)
    fast = readings.parse_lines(line + "\n", 1, 1, StageReport("x"))
    slow = readings.salvage(line, 1, 1, StageReport("x"))
    assert fast == [slow] and len(slow) == 16 + 5 + 2
    assert readings.parse_lines(SUPERSEDED_ONLY + "\n", 1, 1, StageReport("x"))


@pytest.mark.parametrize("date", ["1970-01-01", "2000-01-01", "2010-12-31"])
def test_a_unit_whose_clock_was_not_set_is_dropped_as_such(date):
    from co2unit_server.toolchain.importer.report import StageReport

    report = StageReport("x")
    assert readings.parse_lines(reading(HW_A, "n", date, "00:00:42", raw=RAW) + "\n", 1, 1,
                                report) == []
    assert report.counts == {("dropped", "date before 2011 (clock not set)"): 1}
    assert readings.parse_lines(reading(HW_A, "n", "2011-01-01", "00:00:42") + "\n", 1, 1,
                                report)


@pytest.mark.parametrize("fields", [15, 17, 20, 22, 31])
def test_other_field_counts_stay_dropped(fields):
    from co2unit_server.toolchain.importer.report import StageReport

    line = "\t".join(reading(HW_A, "n", "2026-11-01", "00:00:42", raw=RAW).split("\t")[:21]
                     + ["7"] * 10)
    line = "\t".join(line.split("\t")[:fields])
    report = StageReport("x")
    assert readings.parse_lines(line + "\n", 1, 1, report) == []
    assert report.counts == {("dropped", "wrong field count"): 1}


@pytest.mark.parametrize("date,time", [("2019-13-31", "13:00:10"), ("2019-00-10", "13:00:10"),
                                       ("2019-07-00", "13:00:10"), ("2019-02-30", "13:00:10"),
                                       ("2019-07-31", "24:00:10"), ("2019-07-31", "13:00:60")])
def test_impossible_date_or_time_is_dropped_and_the_build_goes_on(tree, conn, date, time):
    path = tree.readings(HW_B, "readings-0001.tsv")
    write(path, reading(HW_B, "n", date, time) + "\n"
          + reading(HW_B, "n", "2019-07-31", "13:30:10") + "\n")
    import_tree(tree, conn)
    assert _rows(conn, "SELECT count(*) FROM co2_readings WHERE date = ? AND time = ?",
                 date, time) == [(0,)]
    assert _rows(conn, "SELECT count(*) FROM co2_readings WHERE unit_id = ? AND date = "
                 "'2019-07-31' AND time = '13:30:10'", HW_B) == [(1,)]
    dropped = _log(conn, "readings", "dropped")
    assert dropped.get("unparseable date", 0) + dropped.get("unparseable time", 0) == 1
    import_tree(tree, conn)  # and the next run still works


# Damage injected into a mixed fleet, by the reason the importer must give for dropping it.
INJECTED = {
    "date before 2011 (clock not set)": lambda f: f[:2] + ["1970-01-01"] + f[3:],
    "non-printing bytes": lambda f: f[:1] + [f[1] + "\x01"] + f[2:],
    "wrong field count": lambda f: f[:-1],
    "unparseable field": lambda f: f[:8] + ["7x0"] + f[9:],
    "garbled hw_id": lambda f: ["co2unit-ZZZZZZZZZZZZ"] + f[1:],
    "not a co2unit- line": lambda f: ["test", "1", "2", "3"],
}


def test_a_mixed_fleet_imports_every_well_formed_row_and_counts_each_injected_drop(tmp_path):
    """Units on old firmware, on new firmware, and one updated mid-file, with known damage."""
    tree = Tree(tmp_path)
    units = {"co2unit-161616161616": None, "co2unit-212121212121": 0,
             "co2unit-5a5a5a5a5a5a": 100}  # hw_id: the row from which it writes 21 fields
    good = raw = 0
    for hw, raw_from in units.items():
        lines = []
        for i in range(200):
            day, minute = divmod(i * 30, 24 * 60)
            fields = reading(HW_A, "n", f"2026-11-{day + 1:02d}", f"{minute // 60:02d}:"
                             f"{minute % 60:02d}:10", raw=RAW if raw_from is not None
                             and i >= raw_from else None).split("\t")
            fields[0] = hw
            lines.append("\t".join(fields))
            good += 1
            raw += len(fields) == 21
            if i % 40 == 7:  # a damaged copy of the row, one of each reason per unit
                for damage in INJECTED.values():
                    lines.append("\t".join(damage(fields)))
        write(tree.readings(hw), "\n".join(lines) + "\n")
    conn = open_db(tree)
    import_tree(tree, conn)
    assert _rows(conn, "SELECT count(*) FROM co2_readings") == [(good,)]
    assert _rows(conn, "SELECT count(*) FROM co2_readings WHERE raw_co2_filtered = 45 AND "
                 "raw_sensor_temp = 1101") == [(raw,)]
    assert raw == 200 + 100
    per_unit = 200 // 40
    assert _log(conn, "readings", "dropped") == {r: per_unit * len(units) for r in INJECTED}
