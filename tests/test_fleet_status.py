"""fleet_status: statuses, ordering, signal medians, 7-day sums, unit details and `check`."""

from __future__ import annotations

import sqlite3
import time
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

from co2unit_server import fleet_status
from co2unit_server.cli import main
from co2unit_server.config import Config, load_config
from co2unit_server.fleet_status import UnitRow

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


def test_check_codes_and_lines(conn, cfg):
    code, lines = fleet_status.check(fleet_status.fleet(conn, cfg, NOW), NOW)
    assert code == 2
    assert lines[0] == "FLEET CRITICAL - 4 deployed units: 1 alive, 1 late, 1 silent, 1 never seen"
    assert lines[1:] == [
        "SILENT co2unit-ccccccccccc3 (<b>varanger-03</b>, vj_re_sn_3): last ping "
        "2026-11-03T12:00:00Z (5.0 d ago)",
        "NEVER SEEN co2unit-ddddddddddd4 (varanger-04, vj_re_sn_4): never pinged",
        "LATE co2unit-bbbbbbbbbbb2 (varanger-02, vj_re_sn_2): last ping 2026-11-07T06:00:00Z "
        "(30.0 h ago)"]
    conn.execute("DELETE FROM deploy_durations_tiered WHERE unit_id IN (?, ?)", (SILENT, NEVER))
    code, lines = fleet_status.check(fleet_status.fleet(conn, cfg, NOW), NOW)
    assert (code, len(lines)) == (1, 2) and lines[0].startswith("FLEET WARNING - 2 deployed")
    conn.execute("DELETE FROM deploy_durations_tiered WHERE unit_id = ?", (LATE,))
    assert fleet_status.check(fleet_status.fleet(conn, cfg, NOW), NOW) == (
        0, ["FLEET OK - 1 deployed units: 1 alive"])
    conn.execute("DELETE FROM deploy_durations_tiered")
    code, lines = fleet_status.check(fleet_status.fleet(conn, cfg, NOW), NOW)
    assert code == 3 and "no unit is deployed" in lines[0]


def _ini(tmp_path: Path) -> Path:
    ini = tmp_path / "server.ini"
    ini.write_text(f"[co2unit]\nremote_data_dir = {tmp_path / 'remote_data'}\n"
                   f"var_dir = {tmp_path / 'var'}\n")
    return ini


def test_check_command_exit_codes(tmp_path, capsys):
    ini = _ini(tmp_path)
    assert main(["check", "--ini", str(ini)]) == 3  # no database yet
    assert capsys.readouterr().out.startswith("FLEET UNKNOWN - cannot tell: no database at")
    conn = build_fleet(tmp_path / "var" / "db.sqlite3", time.time())
    assert main(["check", "--ini", str(ini)]) == 2
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("FLEET CRITICAL") and len(out) == 4
    assert [line.split()[0] for line in out[1:]] == ["SILENT", "NEVER", "LATE"]
    conn.execute("DELETE FROM deploy_durations_tiered WHERE unit_id IN (?, ?)", (SILENT, NEVER))
    assert main(["check", "--ini", str(ini)]) == 1
    assert capsys.readouterr().out.splitlines()[1].startswith(f"LATE {LATE}")
    conn.execute("DELETE FROM deploy_durations_tiered WHERE unit_id = ?", (LATE,))
    assert main(["check", "--ini", str(ini)]) == 0
    assert capsys.readouterr().out == "FLEET OK - 1 deployed units: 1 alive\n"


def test_check_command_cannot_tell(tmp_path, capsys):
    ini = _ini(tmp_path)
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "db.sqlite3").write_text("not a database")
    assert main(["check", "--ini", str(ini)]) == 3
    assert capsys.readouterr().out.startswith("FLEET UNKNOWN")
    bad = tmp_path / "bad.ini"
    bad.write_text("[co2unit]\nlate_after_hours = soon\n")
    assert main(["check", "--ini", str(bad)]) == 3


# --- the gateways' devices in `check`


def test_check_counts_the_watched_gateway_devices(conn, cfg, tmp_path):
    from fleet_fixtures import DEVICE_STATUS, TCP_RETIRED, build_devices

    from co2unit_server import gateway_status

    cfg = load_config({}, remote_data_dir=cfg.remote_data_dir, var_dir=cfg.var_dir,
                      pull_devices_file=tmp_path / "devices.tsv")
    build_devices(conn, cfg.pull_devices_file)
    units = fleet_status.fleet(conn, cfg, NOW)
    devices = gateway_status.fleet_devices(conn, cfg, NOW)
    code, lines = fleet_status.check(units, NOW, devices)
    assert code == 2
    assert lines[0] == ("FLEET CRITICAL - 4 deployed units: 1 alive, 1 late, 1 silent, 1 never "
                        "seen; 7 gateway devices: 2 alive, 1 late, 1 silent, 3 never seen")
    assert [line.split(" (")[0] for line in lines[4:]] == [
        "SILENT esp8266-3", "NEVER SEEN lab-2", "NEVER SEEN lab-3",
        "NEVER SEEN esp8266-unidentified", "LATE esp8266-2"]
    assert TCP_RETIRED in DEVICE_STATUS and not any(TCP_RETIRED in line for line in lines)
    # Gateway devices alone: checked, even with no unit deployed.
    conn.execute("DELETE FROM deploy_durations_tiered")
    code, lines = fleet_status.check(fleet_status.fleet(conn, cfg, NOW), NOW, devices)
    assert (code, lines[0].split(";")[0]) == (2, "FLEET CRITICAL - 0 deployed units")
    alive = [d for d in devices if d.status == "alive"]
    assert fleet_status.check([], NOW, alive) == (
        0, ["FLEET OK - 0 deployed units; 2 gateway devices: 2 alive"])


def test_check_command_includes_gateway_devices(tmp_path, capsys):
    from fleet_fixtures import build_devices

    ini = _ini(tmp_path)
    devices = tmp_path / "devices.tsv"
    ini.write_text(ini.read_text() + f"pull_devices_file = {devices}\n")
    conn = build_fleet(tmp_path / "var" / "db.sqlite3", time.time())
    conn.execute("DELETE FROM deploy_durations_tiered WHERE unit_id IN (?, ?, ?)",
                 (SILENT, NEVER, LATE))
    build_devices(conn, devices, time.time())
    assert main(["check", "--ini", str(ini)]) == 2
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("FLEET CRITICAL - 1 deployed units: 1 alive; 7 gateway devices")
    assert "NEVER SEEN lab-2 (pull device): no data ever, expected every 1 min" in out


def test_check_reports_what_the_running_gateway_process_cannot_do(tmp_path, capsys):
    from co2unit_server.gateways.health import CRITICAL, WARNING, Health

    ini = _ini(tmp_path)
    conn = build_fleet(tmp_path / "var" / "db.sqlite3", time.time())
    conn.execute("DELETE FROM deploy_durations_tiered WHERE unit_id IN (?, ?, ?)",
                 (SILENT, NEVER, LATE))
    assert main(["check", "--ini", str(ini)]) == 0
    capsys.readouterr()
    health = Health(tmp_path / "var" / "gateways-health.json")
    health.set("pull devices file", WARNING, "devices.tsv:3: bad (still polling 2 devices)")
    assert main(["check", "--ini", str(ini)]) == 1
    assert capsys.readouterr().out.splitlines()[1:] == [
        "GATEWAY WARNING devices.tsv:3: bad (still polling 2 devices)"]
    health.set("TCP gateway", CRITICAL, "TCP gateway not started: address in use")
    assert main(["check", "--ini", str(ini)]) == 2
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("FLEET CRITICAL - 1 deployed units: 1 alive")
    assert "GATEWAY CRITICAL TCP gateway not started: address in use" in out
    health.set("TCP gateway", CRITICAL, None)
    health.set("pull devices file", WARNING, None)
    assert main(["check", "--ini", str(ini)]) == 0
    health.remove()  # the process stopped cleanly
    assert main(["check", "--ini", str(ini)]) == 0
