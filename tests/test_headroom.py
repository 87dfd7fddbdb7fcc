"""The free-space floor every writer of new data shares: its state, its log lines, its alarms."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time

from gateway_fixtures import db_rows, packet, records, wait_for
from test_metrics import samples, value

from co2unit_server.core import headroom
from co2unit_server.core.config import load_config
from co2unit_server.core.headroom import Headroom, free_bytes, storage, storage_alarms
from co2unit_server.records.pinglog import ping_files
from co2unit_server.simulator.common import until_stored
from co2unit_server.simulator.launcher import ServerProcess, free_port
from co2unit_server.simulator.ws_devices import (
    Fleet,
    FleetPlan,
    StreamingDevice,
    run_fleet,
    verify,
)
from co2unit_server.status import check

from conftest import HW_ID, INI

GIB = 1 << 30


def look_again(headroom: Headroom) -> None:
    headroom._checked_at = float("-inf")  # past RECHECK_S: the next look reads statvfs


def test_one_log_line_per_transition_however_many_looks(tmp_path, caplog):
    headroom = Headroom(tmp_path, free_bytes(tmp_path) + GIB, "test writer")
    caplog.set_level(logging.INFO, "co2unit_server.core.headroom")
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
    code, lines = check.check([], 0.0, (), storage=alarms)
    assert code == check.CRITICAL and lines[0].startswith("FLEET CRITICAL")
    assert lines[1:] == alarms
    assert check.check([], 0.0)[0] == check.UNKNOWN_EXIT  # without: as before


# --- a disk that fills while devices stream: the real server, its gateways, real devices

DISK_BYTES = 24 << 20
FLOOR = 4 << 20
RETRY_S = 2.0  # ws_full_retry_seconds
STREAM_S = 12.0
FULL_AT_S, RECOVER_AT_S = 2.0, 7.0
DEVICES, RATE = 10, 50.0
UPDATE = "2026-12-01/main.py"  # a file of an update, pulled while the disk is full
PING_NOTE = "n" * 120  # a long site_code: a few dozen pings fill a page of the ping log


def ping(server: ServerProcess, note: str) -> int:
    return server.request("POST", f"/ou/{HW_ID}/alive?site_code={note}").status


def pings_logged(server: ServerProcess) -> str:
    return "".join(path.read_text() for path in ping_files(server.var_dir / "pings"))


def tcp_refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def send_packet(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        assert s.recv(1) == b""


def storage_full_metric(server: ServerProcess) -> float:
    text = server.request("GET", "/metrics").body.decode()
    return value(samples(text), "co2unit_storage_full", path=str(server.remote_data))


class Scenario:
    """What the test does to the disk while the devices stream, and what the server answered."""

    def __init__(self, server: ServerProcess, disk, tcp_port: int) -> None:
        self.server, self.disk, self.tcp_port = server, disk, tcp_port
        self.seen: dict = {}
        self.pings: dict[str, int] = {}  # site_code: status
        self.full_s = 0.0

    def below_floor(self) -> None:
        """Below the floor, with room left: new data refused, pings still recorded."""
        self.disk.fill(leave=FLOOR // 2)
        time.sleep(1.5)  # every component has looked at the disk since
        self.pings["below-floor"] = ping(self.server, "below-floor")
        self.seen["push"] = self.server.request(
            "PUT", f"/ou/{HW_ID}/push-sequential/data/readings/readings-0000.tsv?offset=0",
            b"r" * 4096).status
        self.seen["tcp refused"] = tcp_refused(self.tcp_port)
        self.seen["metric full"] = storage_full_metric(self.server)

    def nothing_left(self) -> None:
        """Not a byte left: a ping gets 507 once its line cannot be written."""
        self.disk.fill()
        for i in range(60):
            note = f"full-{i}-{PING_NOTE}"
            self.pings[note] = ping(self.server, note)
        update = self.server.request("GET", f"/ou/{HW_ID}/updates/{UPDATE}")
        self.seen["updates"] = (update.status, update.body)

    def recovered(self) -> None:
        self.disk.empty()
        time.sleep(1.5)
        self.pings["recovered"] = ping(self.server, "recovered")
        self.seen["tcp refused after"] = tcp_refused(self.tcp_port)
        send_packet(self.tcp_port, packet(records(1, 3)))
        self.seen["metric full after"] = storage_full_metric(self.server)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(FULL_AT_S)
        began = loop.time()
        await asyncio.to_thread(self.below_floor)
        await asyncio.to_thread(self.nothing_left)
        await asyncio.sleep(max(0.0, began + RECOVER_AT_S - FULL_AT_S - loop.time()))
        self.full_s = loop.time() - began
        await asyncio.to_thread(self.recovered)


def test_a_disk_that_fills_while_devices_stream_is_a_state_not_a_storm(tmp_path, small_fs):
    disk = small_fs(DISK_BYTES)
    ws_port, tcp_port = free_port(), free_port()
    server = ServerProcess(tmp_path, INI, {
        "CO2UNIT_GATEWAY_HOST": "127.0.0.1", "CO2UNIT_WS_GATEWAY_PORT": str(ws_port),
        "CO2UNIT_TCP_GATEWAY_PORT": str(tcp_port), "CO2UNIT_MIN_FREE_BYTES": str(FLOOR),
        "CO2UNIT_WS_FULL_RETRY_SECONDS": str(RETRY_S)})
    server.remote_data, server.var_dir = disk.path / "remote_data", disk.path / "var"
    update = server.remote_data / HW_ID / "updates" / UPDATE
    update.parent.mkdir(parents=True)
    update.write_bytes(b"print('new firmware')\n")
    server.start()
    try:
        assert wait_for(lambda: not tcp_refused(tcp_port)), "the gateways did not start"
        scenario = Scenario(server, disk, tcp_port)
        fleet = Fleet(FleetPlan(f"ws://127.0.0.1:{ws_port}/", RATE), DEVICES)
        devices = [StreamingDevice(f"disk-{i}", i, fleet) for i in range(DEVICES)]
        asyncio.run(run_fleet(devices, fleet, STREAM_S, during=scenario.run))
        result = until_stored(lambda: verify(devices, server.remote_data,
                                             server.var_dir / "db.sqlite3"))
        stored_pings = wait_for(lambda: db_rows(
            server.var_dir / "db.sqlite3", "SELECT nickname FROM pings"), timeout=10)
    finally:
        server.stop()
    log = server.log_path.read_text(errors="replace")

    # Nothing acknowledged lost: every acked seq in the raw log and its readings in the table.
    assert not result.problems, result.problems[:10]
    assert result.rows_found == result.rows_expected > 0
    assert all(d.acked and not d.pending for d in devices)
    # No storm: each device came back by the retry rule, not at once.
    waits = [w for d in devices for w in d.full_waits]
    assert waits and min(waits) >= RETRY_S, waits
    most = max(len(d.full_waits) for d in devices)
    assert most <= scenario.full_s / RETRY_S + 1, (most, scenario.full_s)
    assert all(d.connections <= len(d.full_waits) + 1 for d in devices)
    # Pushes 507, stations' connects refused, the metric set, update pulls answered.
    assert scenario.seen["push"] == 507 and scenario.seen["tcp refused"]
    assert scenario.seen["metric full"] == 1
    assert scenario.seen["updates"] == (200, update.read_bytes())
    assert not scenario.seen["tcp refused after"] and scenario.seen["metric full after"] == 0
    # Every ping answered honestly: 200 and recorded, or 507 and not.
    logged = pings_logged(server)
    assert scenario.pings["below-floor"] == scenario.pings["recovered"] == 200
    assert set(scenario.pings.values()) == {200, 507}, scenario.pings
    for note, status in scenario.pings.items():
        assert (note in logged) == (status == 200), (note, status)
    assert sorted(n for (n,) in stored_pings) == sorted(
        n for n, status in scenario.pings.items() if status == 200)
    # One line per transition and component, no traceback, no worker died (SIGBUS).
    for component in ("ws gateway", "tcp gateway"):
        assert log.count(f"{component}: storage full") == 1, log[-5000:]
        assert log.count(f"{component}: storage recovered") == 1, log[-5000:]
    assert 1 <= log.count("unit pushes: storage full") <= 2  # a line per worker that saw it
    assert "Traceback" not in log and "DAMN" not in log and "signal 7" not in log, log[-5000:]
    print(f"\nfull for {scenario.full_s:.1f} s: {sum(len(d.full_waits) for d in devices)} "
          f"refusals (1013) of {DEVICES} devices, most {most} a device "
          f"({most / scenario.full_s * 60:.0f}/min), connections "
          f"{sum(d.connections for d in devices)}, resent "
          f"{sum(d.resent for d in devices)} messages, acked "
          f"{sum(len(d.acked) for d in devices)}; pings 507: "
          f"{list(scenario.pings.values()).count(507)} of {len(scenario.pings)}")


def test_a_first_look_under_way_in_another_thread_is_not_taken_for_a_full_disk(monkeypatch):
    # uWSGI's threads push at once: the second must not see the 0 bytes a first look starts from.
    def slow_statvfs(path):
        time.sleep(0.3)
        return 1 << 40

    monkeypatch.setattr(headroom, "free_bytes", slow_statvfs)
    room = Headroom("/nowhere", 1 << 20, "unit pushes")
    first = threading.Thread(target=room.full)
    first.start()
    time.sleep(0.1)
    assert not room.full(4096)
    first.join()
