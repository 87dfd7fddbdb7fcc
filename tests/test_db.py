"""The database schema: creation, and tables from an older schema moved aside intact."""

from __future__ import annotations

import sqlite3

import pytest

from co2unit_server.database import db, measurement_store


def tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_schema_is_created_once_and_idempotent(tmp_path):
    conn = db.connect(tmp_path / "db.sqlite3")
    db.init_schema(conn)
    db.init_schema(conn)
    assert {"pings", "co2_readings", "error_logs", "deploy_durations_tiered"} <= tables(conn)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reference_pings_table_is_moved_aside_and_recreated(tmp_path, caplog):
    conn = db.connect(tmp_path / "db.sqlite3")
    # The reference server's table: no ping_ts, no ber_raw, an index of its own.
    conn.execute("CREATE TABLE pings (ping_date, ping_time, unit_id, nickname, rssi_raw, "
                 "rssi_dbm)")
    conn.execute("CREATE INDEX pings_ts ON pings (ping_date)")
    conn.execute("INSERT INTO pings VALUES ('2019-09-17', '16:37:12.455629', "
                 "'co2unit-30aea42a50bc', 'varanger-03', '12', '-89')")
    db.init_schema(conn)
    aside = [t for t in tables(conn) if t.startswith("pings_before_")]
    assert len(aside) == 1
    assert conn.execute(f'SELECT count(*) FROM "{aside[0]}"').fetchone()[0] == 1
    columns = [r[1] for r in conn.execute("PRAGMA table_info(pings)")]
    assert columns[:2] == ["ping_ts", "ping_date"] and "ber_raw" in columns
    indexes = {r[1] for r in conn.execute("PRAGMA index_list(pings)")}
    assert {"pings_ts", "pings_unit_ts"} <= indexes
    assert "lacked ber_raw, ping_ts" in caplog.text


def test_connect_readonly_refuses_writes_and_takes_any_path(tmp_path):
    path = tmp_path / "odd #?% dir" / "db.sqlite3"
    path.parent.mkdir()
    conn = db.connect(path)
    db.init_schema(conn)
    conn.close()
    ro = db.connect_readonly(path)
    assert ro.execute("SELECT count(*) FROM pings").fetchone() == (0,)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        ro.execute("DELETE FROM pings")
    assert not (tmp_path / "odd ").exists()  # nothing created beside the real file


def test_empty_database_has_every_table():
    assert {"pings", "co2_readings", "update_downloads"} <= tables(db.empty_database())


# gateway_receipts as schema 2 built it: keyed by source, with two indexes.
RECEIPTS_V2 = """
CREATE TABLE gateway_receipts (source TEXT PRIMARY KEY, device TEXT NOT NULL,
    family TEXT NOT NULL, ts TEXT NOT NULL, verdict TEXT NOT NULL, stored INTEGER NOT NULL,
    expected_s REAL, detail TEXT) WITHOUT ROWID;
CREATE INDEX gateway_receipts_device_ts ON gateway_receipts (device, ts);
CREATE INDEX gateway_receipts_device_verdict ON gateway_receipts (device, verdict, ts);
INSERT INTO gateway_receipts VALUES
    ('tcp/esp8266-1/0000.log:1', 'esp8266-1', 'tcp', '2026-12-06T01:00:00.000000', 'ok', 3,
     3600.0, NULL),
    ('tcp/esp8266-1/0000.log:2', 'esp8266-1', 'tcp', '2026-12-06T02:00:00.000000', 'bad', 0,
     NULL, 'checksum');
PRAGMA user_version = 2;
"""


def test_schema_3_keys_the_receipts_by_device_and_time_and_keeps_them(tmp_path):
    conn = db.connect(tmp_path / "db.sqlite3")
    conn.executescript(RECEIPTS_V2)
    before = conn.execute("SELECT * FROM gateway_receipts ORDER BY source").fetchall()
    db.init_schema(conn)
    assert conn.execute("PRAGMA user_version").fetchone() == (3,)
    assert conn.execute("SELECT * FROM gateway_receipts ORDER BY source").fetchall() == before
    key = [row[1] for row in sorted(conn.execute("PRAGMA table_info(gateway_receipts)"),
                                    key=lambda row: row[5]) if row[5]]
    assert key == ["device", "ts", "source"]
    assert {row[1] for row in conn.execute("PRAGMA index_list(gateway_receipts)")
            if row[3] == "c"} == {"gateway_receipts_refused"}
    assert "gateway_receipts_v2" not in tables(conn)
    # The same line again is still kept once; the fleet page's refusal count reads the index.
    conn.execute(db.INSERT_RECEIPT, before[1])
    assert conn.execute("SELECT count(*) FROM gateway_receipts").fetchone() == (2,)
    plan = conn.execute("EXPLAIN QUERY PLAN " + measurement_store._RECEIPT_STATS,
                        {"devices": '["esp8266-1"]', "since": ""}).fetchall()
    assert "USING INDEX gateway_receipts_refused" in str(plan)
    assert measurement_store.receipt_stats(conn, ["esp8266-1"], "")["esp8266-1"].refused == 1
    db.init_schema(conn)  # once only
    assert conn.execute("SELECT count(*) FROM gateway_receipts").fetchone() == (2,)
