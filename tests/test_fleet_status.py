"""fleet_status: statuses, ordering, signal medians, 7-day sums and unit details."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from fleet_fixtures import (
    ALIVE,
    HOUR,
    LAB,
    LATE,
    NEVER,
    NOW,
    SILENT,
    STATUS_OF,
    UNKNOWN,
    build_fleet,
)

from co2unit_server.core.config import Config, load_config
from co2unit_server.status import fleet_status
from co2unit_server.status.fleet_status import UnitRow

STRAY = "co2unit-999999999999"  # only a directory in the push store


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return load_config({}, remote_data_dir=tmp_path / "remote_data", var_dir=tmp_path / "var")


@pytest.fixture
def conn(cfg: Config) -> sqlite3.Connection:
    return build_fleet(cfg.db_path)


def by_unit(rows: list[UnitRow]) -> dict[str, UnitRow]:
    return {row.hw_id: row for row in rows}


def test_statuses_from_pings_and_deployments(conn, cfg):
    rows = by_unit(fleet_status.fleet(conn, cfg, NOW))
    assert {u: r.status for u, r in rows.items()} == STATUS_OF
    assert {u for u, r in rows.items() if r.deployed} == {ALIVE, LATE, SILENT, NEVER}
    assert (rows[ALIVE].nickname, rows[ALIVE].site, rows[ALIVE].tier) == \
        ("varanger-01", "vj_re_sn_1", 2)
    assert rows[UNKNOWN].nickname == "stray"  # no deployment: the ping's nickname
    assert (rows[LAB].deployment, rows[LAB].site, rows[LAB].problem) == ("lab_check", None, False)
    assert rows[NEVER].last_ping is None and rows[ALIVE].last_ping == NOW - 2 * HOUR


def test_thresholds_come_from_the_settings(conn, tmp_path):
    cfg = load_config({}, remote_data_dir=tmp_path / "rd", late_after_hours=48,
                      silent_after_hours=200)
    rows = by_unit(fleet_status.fleet(conn, cfg, NOW))
    assert (rows[LATE].status, rows[SILENT].status) == ("alive", "late")


def test_problems_first_then_unknown_then_the_rest_by_tier(conn, cfg):
    rows = fleet_status.fleet(conn, cfg, NOW)
    assert [r.hw_id for r in rows] == [SILENT, NEVER, LATE, UNKNOWN, ALIVE, LAB]
    assert fleet_status.summary(rows) == ("6 units: 1 alive, 1 late, 2 silent, 1 never seen, "
                                          "1 unknown; 4 deployed, 3 need attention")


def test_signal_last_and_7_day_median(conn, cfg):
    rows = by_unit(fleet_status.fleet(conn, cfg, NOW))
    # -113 dBm 20 days ago is outside the window; the window holds -90 -85 -81 -80 -75.
    assert (rows[ALIVE].rssi_dbm, rows[ALIVE].rssi_median) == (-75, -81)
    assert (rows[LATE].rssi_dbm, rows[LATE].rssi_median) == (None, None)  # no signal reading
    assert rows[SILENT].rssi_median == -100
    assert (rows[LAB].rssi_dbm, rows[LAB].rssi_median) == (-90, None)  # 12 days ago


def test_seven_day_sums_last_push_and_readings_behind(conn, cfg):
    rows = by_unit(fleet_status.fleet(conn, cfg, NOW))
    alive = rows[ALIVE]
    assert (alive.bytes_7d, alive.errors_7d) == (8_000 + 4_096, 1 + 2)  # not the 9-day-old row
    assert alive.last_push == NOW - 2 * HOUR and alive.last_reading == NOW - 3 * HOUR
    silent = rows[SILENT]
    assert (silent.bytes_7d, silent.last_push) == (3_000, NOW - 5 * 24 * HOUR)
    # The newest day had no readings: the reading comes from the day before.
    assert silent.last_reading == NOW - (6 * 24 + 2) * HOUR
    assert (rows[LATE].bytes_7d, rows[LATE].last_push, rows[LATE].last_reading) == (0, None, None)


def test_units_of_the_push_store_and_their_updates(conn, cfg):
    (cfg.remote_data_dir / STRAY / "data").mkdir(parents=True)
    (cfg.remote_data_dir / "manual").mkdir()  # not a unit
    update = cfg.remote_data_dir / ALIVE / "updates" / "update-2026-11-01a" / "conf-patch"
    update.mkdir(parents=True)
    (update / "ou-id.json").write_text('{"site_code": "varanger-01"}')
    rows = by_unit(fleet_status.fleet(conn, cfg, NOW))
    assert set(rows) == set(STATUS_OF) | {STRAY}
    assert rows[STRAY].status == "unknown" and rows[STRAY].last_ping is None
    assert [(u.name, u.state) for u in rows[ALIVE].updates] == [("update-2026-11-01a",
                                                                  "published")]
    assert rows[LATE].updates == []


def test_one_unit_only(conn, cfg):
    rows = fleet_status.fleet(conn, cfg, NOW, units=[LATE])
    assert [(r.hw_id, r.status) for r in rows] == [(LATE, "late")]


def test_unit_detail(conn, cfg):
    errors = cfg.remote_data_dir / ALIVE / "errors"
    errors.mkdir(parents=True)
    (errors / "errors-0000.txt").write_text("old\n")
    (errors / "errors-0001.txt").write_text("".join(f"line {i}\n" for i in range(100)))
    (cfg.remote_data_dir / ALIVE / "data" / "readings").mkdir(parents=True)
    (cfg.remote_data_dir / ALIVE / "data" / "readings" / "readings-0000.tsv").write_text("x\n")
    detail = fleet_status.unit_detail(conn, cfg, ALIVE, NOW)
    assert detail.row.status == "alive"
    assert [d["status"] for d in detail.deployments] == ["lab_check", "deployed"]
    assert len(detail.pings) == 6 and detail.pings[0]["rssi_dbm"] == -75  # newest first
    assert [(f.directory, f.name, f.size) for f in detail.files] == [
        ("data/readings", "readings-0000.tsv", 2), ("errors", "errors-0000.txt", 4),
        ("errors", "errors-0001.txt", 790)]
    assert detail.error_log == "errors-0001.txt"
    assert detail.error_tail == [f"line {i}" for i in range(60, 100)]
    assert fleet_status.unit_detail(conn, cfg, "co2unit-000000000000", NOW) is None
    assert fleet_status.unit_detail(conn, cfg, NEVER, NOW).pings == []
