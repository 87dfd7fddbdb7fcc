"""`co2unit-server check`: exit codes and lines over the units and the gateway devices."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from fleet_fixtures import LATE, NEVER, NOW, SILENT, build_fleet

from co2unit_server.cli import main
from co2unit_server.core.config import Config, load_config
from co2unit_server.status import fleet_status
from co2unit_server.status.check import check


@pytest.fixture
def conn(config: Config) -> sqlite3.Connection:
    return build_fleet(config.db_path)


def test_check_codes_and_lines(conn, config):
    code, lines = check(fleet_status.fleet(conn, config, NOW), NOW)
    assert code == 2
    assert lines[0] == "FLEET CRITICAL - 4 deployed units: 1 alive, 1 late, 1 silent, 1 never seen"
    assert lines[1:] == [
        "SILENT co2unit-ccccccccccc3 (<b>varanger-03</b>, vj_re_sn_3): last ping "
        "2026-11-03T12:00:00Z (5.0 d ago)",
        "NEVER SEEN co2unit-ddddddddddd4 (varanger-04, vj_re_sn_4): never pinged",
        "LATE co2unit-bbbbbbbbbbb2 (varanger-02, vj_re_sn_2): last ping 2026-11-07T06:00:00Z "
        "(30.0 h ago)"]
    conn.execute("DELETE FROM deploy_durations_tiered WHERE unit_id IN (?, ?)", (SILENT, NEVER))
    code, lines = check(fleet_status.fleet(conn, config, NOW), NOW)
    assert (code, len(lines)) == (1, 2) and lines[0].startswith("FLEET WARNING - 2 deployed")
    conn.execute("DELETE FROM deploy_durations_tiered WHERE unit_id = ?", (LATE,))
    assert check(fleet_status.fleet(conn, config, NOW), NOW) == (
        0, ["FLEET OK - 1 deployed units: 1 alive"])
    conn.execute("DELETE FROM deploy_durations_tiered")
    code, lines = check(fleet_status.fleet(conn, config, NOW), NOW)
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


def test_check_counts_the_watched_gateway_devices(conn, config, tmp_path):
    from fleet_fixtures import DEVICE_STATUS, TCP_RETIRED, build_devices

    from co2unit_server.status import gateway_status

    cfg = load_config({}, remote_data_dir=config.remote_data_dir, var_dir=config.var_dir,
                      pull_devices_file=tmp_path / "devices.tsv")
    build_devices(conn, cfg.pull_devices_file)
    units = fleet_status.fleet(conn, cfg, NOW)
    devices = gateway_status.fleet_devices(conn, cfg, NOW)
    code, lines = check(units, NOW, devices)
    assert code == 2
    assert lines[0] == ("FLEET CRITICAL - 4 deployed units: 1 alive, 1 late, 1 silent, 1 never "
                        "seen; 7 gateway devices: 2 alive, 1 late, 1 silent, 3 never seen")
    assert [line.split(" (")[0] for line in lines[4:]] == [
        "SILENT esp8266-3", "NEVER SEEN lab-2", "NEVER SEEN lab-3",
        "NEVER SEEN esp8266-unidentified", "LATE esp8266-2"]
    assert TCP_RETIRED in DEVICE_STATUS and not any(TCP_RETIRED in line for line in lines)
    # Gateway devices alone: checked, even with no unit deployed.
    conn.execute("DELETE FROM deploy_durations_tiered")
    code, lines = check(fleet_status.fleet(conn, cfg, NOW), NOW, devices)
    assert (code, lines[0].split(";")[0]) == (2, "FLEET CRITICAL - 0 deployed units")
    alive = [d for d in devices if d.status == "alive"]
    assert check([], NOW, alive) == (
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
    from co2unit_server.records.gateway_health import CRITICAL, WARNING, Health

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
