"""gateway_status: the gateway devices' statuses, counts, last values and details."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from fleet_fixtures import (
    DEVICE_STATUS,
    HOUR,
    NOW,
    PULL_ALIVE,
    PULL_FAILING,
    PULL_GONE,
    PULL_NEW,
    TCP_ALIVE,
    TCP_BAD,
    TCP_LATE,
    TCP_RETIRED,
    TCP_SILENT,
    build_devices,
    build_fleet,
)

from co2unit_server.core.config import Config, load_config
from co2unit_server.database import measurement_store
from co2unit_server.status import gateway_status
from co2unit_server.status.gateway_status import DeviceRow


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return load_config({}, remote_data_dir=tmp_path / "remote_data", var_dir=tmp_path / "var",
                       pull_devices_file=tmp_path / "devices.tsv")


@pytest.fixture
def conn(cfg: Config) -> sqlite3.Connection:
    conn = build_fleet(cfg.db_path)
    build_devices(conn, cfg.pull_devices_file)
    return conn


def by_device(rows: list[DeviceRow]) -> dict[str, DeviceRow]:
    return {row.device: row for row in rows}


def test_statuses_from_the_last_data_and_the_interval(conn, cfg):
    rows = by_device(gateway_status.fleet_devices(conn, cfg, NOW))
    assert {d: r.status for d, r in rows.items()} == DEVICE_STATUS
    assert {d: r.family for d, r in rows.items() if r.family == "pull"}.keys() == {
        PULL_ALIVE, PULL_FAILING, PULL_NEW, PULL_GONE}
    # A TCP device's interval is its expectedWakeupTime; a polled one's, the devices file's.
    assert (rows[TCP_ALIVE].interval_s, rows[PULL_NEW].interval_s) == (3600.0, 120.0)
    assert rows[TCP_BAD].interval_s is None and rows[PULL_GONE].interval_s is None
    # A packet of a device ID with no record format yet still shows the station is alive.
    assert rows[TCP_LATE].last_data == NOW - 3 * HOUR
    assert rows[TCP_ALIVE].last_data == NOW - 1 * HOUR
    assert rows[TCP_ALIVE].last_received == NOW - 1 * HOUR


def test_watched_devices_come_first_when_in_trouble(conn, cfg):
    rows = gateway_status.fleet_devices(conn, cfg, NOW)
    assert {r.device for r in rows if r.watched} == set(DEVICE_STATUS) - {TCP_RETIRED, PULL_GONE}
    assert [r.device for r in rows] == [TCP_SILENT, PULL_FAILING, PULL_NEW, TCP_BAD, TCP_LATE,
                                        PULL_GONE, PULL_ALIVE, TCP_ALIVE, TCP_RETIRED]
    assert gateway_status.summary(rows) == ("9 gateway devices: 2 alive, 1 late, 2 silent, "
                                            "3 never seen, 1 unknown; 5 need attention")


def test_late_and_silent_thresholds_scale_with_the_settings(conn, tmp_path, cfg):
    # TCP: late after 2 intervals (2 h), silent after 2 h * 72 / 26 = 5.5 h by default.
    rows = by_device(gateway_status.fleet_devices(conn, cfg, NOW + 0.9 * HOUR))
    assert (rows[TCP_ALIVE].status, rows[TCP_LATE].status) == ("alive", "late")
    rows = by_device(gateway_status.fleet_devices(conn, cfg, NOW + 2.6 * HOUR))
    assert (rows[TCP_ALIVE].status, rows[TCP_LATE].status) == ("late", "silent")
    # Pull: late after 3 intervals (3 min).
    rows = by_device(gateway_status.fleet_devices(conn, cfg, NOW + 170))
    assert rows[PULL_ALIVE].status == "late"
    wider = load_config({}, pull_devices_file=cfg.pull_devices_file, late_after_hours=10,
                        silent_after_hours=100)
    rows = by_device(gateway_status.fleet_devices(conn, wider, NOW + 2.6 * HOUR))
    assert (rows[TCP_LATE].status, rows[TCP_SILENT].status) == ("late", "late")


def test_counts_of_the_last_seven_days_and_last_values(conn, cfg):
    rows = by_device(gateway_status.fleet_devices(conn, cfg, NOW))
    assert (rows[TCP_ALIVE].received_7d, rows[TCP_ALIVE].refused_7d) == (3, 1)
    assert (rows[PULL_ALIVE].received_7d, rows[PULL_ALIVE].refused_7d) == (3, 1)
    assert (rows[PULL_NEW].received_7d, rows[PULL_NEW].last_received) == (0, None)
    assert [(v.name, v.value) for v in rows[TCP_ALIVE].values] == [
        ("humidity", 54.997), ("light", 1234.0), ("temperature", 21.501)]
    # The newest of each name: co2 from the partial poll, humidity from the one before.
    assert [(v.name, v.value) for v in rows[PULL_ALIVE].values] == [
        ("dht22.humidity", 47.3), ("mq135.co2", 410.0)]
    assert gateway_status.values_text(rows[TCP_ALIVE].values) == (
        "humidity 54.997 · light 1234 · temperature 21.501")
    assert rows[PULL_NEW].values == []


def test_last_values_are_among_the_newest_values_only(conn, cfg, monkeypatch):
    # PULL_ALIVE's humidity is the second newest value: out of a window of one.
    monkeypatch.setattr(measurement_store, "LATEST_ROWS", 1)
    rows = by_device(gateway_status.fleet_devices(conn, cfg, NOW))
    assert [v.name for v in rows[PULL_ALIVE].values] == ["mq135.co2"]


def test_one_device_and_its_detail(conn, cfg):
    (row,) = gateway_status.fleet_devices(conn, cfg, NOW, [TCP_ALIVE, "nothing-here"])
    assert row.device == TCP_ALIVE
    detail = gateway_status.device_detail(conn, cfg, TCP_ALIVE, NOW)
    assert [r.verdict for r in detail.receipts] == ["ok", "bad", "ok"]  # newest first
    assert detail.receipts[1].detail.startswith("12 bytes")
    assert gateway_status.device_detail(conn, cfg, PULL_NEW, NOW).receipts == []
    assert gateway_status.device_detail(conn, cfg, "esp8266-99", NOW) is None


def test_problem_lines_for_check(conn, cfg):
    rows = by_device(gateway_status.fleet_devices(conn, cfg, NOW))
    assert rows[TCP_SILENT].problem_line(NOW) == (
        "SILENT esp8266-3 (tcp device): last data 2026-11-08T02:00:00Z (10.0 h ago), "
        "expected every 1.0 h")
    assert rows[PULL_FAILING].problem_line(NOW) == (
        "NEVER SEEN lab-2 (pull device): no data ever, expected every 1 min")


def test_the_pull_devices_file_is_read_tolerantly(tmp_path):
    # The tolerant reading itself is pull_format's (tests/test_pull_format.py).
    path = tmp_path / "devices.tsv"
    path.write_text("ok\thttp://x/\t30\nbad-interval\thttp://x/\tsoon\nlab-2\thttp://y/\t5\n")
    assert gateway_status.pull_intervals(path) == {"ok": 30.0, "lab-2": 5.0}
    assert gateway_status.pull_intervals(tmp_path / "missing.tsv") == {}
    assert gateway_status.pull_intervals(None) == {}
    # A device is polled no sooner than pull_refresh_seconds, so judged by that.
    assert gateway_status.pull_intervals(path, 10.0) == {"ok": 30.0, "lab-2": 10.0}


def test_without_gateways_there_are_no_devices(tmp_path):
    cfg = load_config({}, var_dir=tmp_path / "var")
    assert gateway_status.fleet_devices(build_fleet(cfg.db_path), cfg, NOW) == []
