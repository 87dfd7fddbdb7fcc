"""The free-space floor every writer of new data shares: its state, its log lines, its alarms."""

from __future__ import annotations

import logging

from co2unit_server import fleet_status
from co2unit_server.config import load_config
from co2unit_server.headroom import Headroom, free_bytes, storage, storage_alarms

GIB = 1 << 30


def look_again(headroom: Headroom) -> None:
    headroom._checked_at = float("-inf")  # past RECHECK_S: the next look reads statvfs


def test_one_log_line_per_transition_however_many_looks(tmp_path, caplog):
    headroom = Headroom(tmp_path, free_bytes(tmp_path) + GIB, "test writer")
    caplog.set_level(logging.INFO, "co2unit_server.headroom")
    for _ in range(50):
        assert headroom.full()
        look_again(headroom)
    headroom.min_free_bytes = 0
    for _ in range(50):
        assert not headroom.full()
        look_again(headroom)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("test writer: storage full:")
    assert caplog.records[0].levelname == "ERROR"
    assert lines[1].startswith("test writer: storage recovered:")


def test_one_large_write_refused_is_not_a_full_disk(tmp_path, caplog):
    headroom = Headroom(tmp_path, 0, "test writer")
    assert headroom.full(free_bytes(tmp_path) + GIB)  # this write would not fit...
    assert not headroom.is_full and not caplog.records  # ...but the disk is not full


def test_a_write_that_failed_for_space_is_full_at_once(tmp_path, caplog):
    headroom = Headroom(tmp_path, 0, "alive pings")
    assert not headroom.full()
    headroom.filled()  # ENOSPC between two looks
    assert headroom.is_full
    headroom.wrote()
    assert not headroom.is_full
    assert [r.getMessage().split(":")[1] for r in caplog.records] == [
        " storage full", " storage recovered"]


def test_a_directory_not_made_yet_is_judged_by_its_parent(tmp_path):
    assert free_bytes(tmp_path / "remote_data" / "ws") == free_bytes(tmp_path)


def test_check_is_critical_when_a_data_directory_is_below_the_floor(tmp_path):
    roomy = load_config({}, remote_data_dir=tmp_path / "rd", var_dir=tmp_path / "var",
                        min_free_bytes=0)
    assert storage_alarms(roomy) == []
    assert [s.path for s in storage(roomy)] == [tmp_path / "rd", tmp_path / "var"]
    full = load_config({}, remote_data_dir=tmp_path / "rd", var_dir=tmp_path / "var",
                       min_free_bytes=free_bytes(tmp_path) + GIB)
    alarms = storage_alarms(full)
    assert len(alarms) == 2 and alarms[0].startswith(f"STORAGE FULL {tmp_path / 'rd'}: ")
    code, lines = fleet_status.check([], 0.0, (), alarms)
    assert code == fleet_status.CRITICAL and lines[0].startswith("FLEET CRITICAL")
    assert lines[1:] == alarms
    assert fleet_status.check([], 0.0)[0] == fleet_status.UNKNOWN_EXIT  # without: as before
