"""The database schema: creation, and tables from an older schema moved aside intact."""

from __future__ import annotations

import sqlite3

import pytest

from co2unit_server import db


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
