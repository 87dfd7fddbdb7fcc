"""The gateway process as operations run it: under uWSGI, stopped by SIGTERM, killed with -9."""

from __future__ import annotations

import gc
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from gateway_fixtures import db_rows, send, wait_for

from co2unit_server.gateways.process import tune_gc
from co2unit_server.records import rawlog
from co2unit_server.records.gateway_health import read_health
from co2unit_server.serve import gateway_daemon, uwsgi_argv
from co2unit_server.simulator.launcher import ServerProcess, free_port
from co2unit_server.simulator.nodemcu import DeviceSpec, FleetThread, devices_tsv

REPO = Path(__file__).resolve().parent.parent
INI = REPO / "server.ini.example"
# Eight weather stations of type 1 (the default registry knows only deviceID 1).
TYPES = {"tcp_device_types": ",".join(f"{i}=tsl2561-si7021" for i in range(1, 9))}


def packet(device_id: int, seq: int, records: int = 30) -> bytes:
    """A type-1 packet whose records are unique to (device, seq): nothing dedupes by chance."""
    body = b"".join(struct.pack("<HHH", seq, 20000 + i, 25000 + device_id)
                    for i in range(records))
    return struct.pack("<HHHBBB", len(body), 3600, 120, 6, device_id, 3) + body


def measurement_count(db_path: Path) -> int:
    """Rows in measurements; 0 while the gateway's writer has not created the table yet."""
    rows = db_rows(db_path, "SELECT count(*) FROM measurements")
    return rows[0][0] if rows else 0





def test_uwsgi_gets_the_gateway_as_an_attached_daemon():
    key, value = gateway_daemon()
    argv = uwsgi_argv(INI, added=[(key, value)])
    i = argv.index("--attach-daemon2")
    assert argv[i + 1] == value
    assert value.startswith(f"cmd={sys.executable} -m co2unit_server gateways")
    assert value.endswith(",stopsignal=15")


def test_the_collector_leaves_the_loaded_objects_and_runs_seldom():
    threshold = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_freeze_count() > 10_000  # the modules loaded so far
        assert gc.get_threshold()[0] >= 10_000
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_gateways_without_a_gateway_enabled_say_so(tmp_path):
    done = subprocess.run([sys.executable, "-m", "co2unit_server", "gateways"],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "CO2UNIT_VAR_DIR": str(tmp_path)})
    assert done.returncode == 2
    assert "no gateway enabled" in done.stderr


def test_sigterm_stores_what_was_received_and_exits_cleanly(gateway_factory):
    gateway = gateway_factory(TYPES, tcp=True)
    assert all(send(gateway.tcp_port, packet(7, seq)) for seq in range(20))
    assert gateway.stop() == 0
    assert "gateways stopping" in gateway.log_text()
    # Stored before it exited: 20 packets x 30 records x 3 values.
    assert measurement_count(gateway.var_dir / "db.sqlite3") == 20 * 30 * 3


def test_the_server_runs_the_gateways_and_stops_them(server_factory, tmp_path):
    from co2unit_server.simulator.launcher import free_port

    port = free_port()
    server = server_factory(env={"CO2UNIT_TCP_GATEWAY_PORT": str(port),
                                 "CO2UNIT_GATEWAY_HOST": "127.0.0.1",
                                 "CO2UNIT_TCP_DEVICE_TYPES": TYPES["tcp_device_types"]})
    assert wait_for(lambda: send(port, packet(3, 1))), server.log_path.read_text()[-2000:]
    assert wait_for(lambda: measurement_count(server.var_dir / "db.sqlite3") == 90)
    server.stop()
    # uWSGI stopped its gateway with it: the port is free again.
    assert wait_for(lambda: not send(port, packet(3, 2), timeout=1.0), timeout=10)
    assert "stopping daemon" in server.log_path.read_text()


def test_make_run_with_a_1_s_interval_runs_both_gateways(tmp_path):
    """`make run TCP_PORT=… PULL_DEVICES=…` with ahttpdc's 1 s interval: uWSGI's gateway
    process takes weather-station packets and polls the NodeMCU every refresh, warned once."""
    tcp_port = free_port()
    with FleetThread([DeviceSpec("air-1")]) as fleet:
        devices = tmp_path / "devices.tsv"
        devices.write_text(devices_tsv(fleet.pull_devices(1.0)))
        server = ServerProcess(tmp_path, INI, {"CO2UNIT_GATEWAY_HOST": "127.0.0.1"},
                               ["--tcp-port", str(tcp_port), "--pull-devices", str(devices)])
        with server:
            assert wait_for(lambda: send(tcp_port, packet(1, 1))), server.log_path.read_text()
            db_path = server.var_dir / "db.sqlite3"
            assert wait_for(lambda: db_rows(db_path, "SELECT count(*) FROM measurements "
                                            "WHERE family = 'tcp'") == [(90,)])
            assert wait_for(lambda: len(fleet.devices["air-1"].arrivals_us) >= 6, timeout=30)
        arrivals = list(fleet.devices["air-1"].arrivals_us)
    log = server.log_path.read_text()
    assert log.count("pull air-1: interval 1 s is below pull_refresh_seconds (1.3 s)") == 1
    gaps = [(b - a) / 1e6 for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert all(1.25 < gap < 1.6 for gap in gaps), gaps
    assert "gateways exited" not in log and "respawn" not in log


def test_a_gateway_that_cannot_start_leaves_the_others_running(tmp_path, gateway_factory):
    with FleetThread([DeviceSpec("air-1")]) as fleet, socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        devices = tmp_path / "devices.tsv"
        devices.write_text(devices_tsv(fleet.pull_devices(0.5)))
        gateway = gateway_factory({"tcp_gateway_port": str(port),
                                   "pull_devices_file": str(devices),
                                   "pull_refresh_seconds": "0.2"})
        why = "TCP gateway not started: [Errno 98] error while attempting to bind"
        assert why in gateway.log_text()
        started = time.monotonic()
        assert wait_for(lambda: len(fleet.devices["air-1"].arrivals_us) >= 4)
        assert time.monotonic() - started < 10
        (problem,) = read_health(gateway.var_dir / "gateways-health.json")
        assert problem[:2] == ("TCP gateway", "critical") and why in problem[2]
        assert gateway.proc is not None and gateway.proc.poll() is None  # still running
        assert gateway.stop() == 0


@pytest.mark.parametrize("kill_after_packets", [5, 60])
def test_kill_9_loses_no_packet_the_gateway_read_whole(gateway_factory, tmp_path,
                                                       kill_after_packets):
    """Devices send while the gateway is killed with -9: every packet it read to EOF is in the
    raw log after restart, and the importer puts it in the table."""
    gateway = gateway_factory(TYPES, tcp=True)
    port = gateway.tcp_port
    confirmed: list[bytes] = []
    lock = threading.Lock()
    sent = threading.Semaphore(0)

    def device(device_id: int) -> None:
        for seq in range(40):
            data = packet(device_id, seq)
            if send(port, data, timeout=5.0):
                with lock:
                    confirmed.append(data)
                sent.release()
            else:
                return  # the gateway is gone: the device keeps its records for later

    threads = [threading.Thread(target=device, args=(d,)) for d in range(1, 9)]
    for t in threads:
        t.start()
    for _ in range(kill_after_packets):
        assert sent.acquire(timeout=30)
    gateway.kill()  # SIGKILL, mid-stream
    for t in threads:
        t.join(timeout=60)
    assert confirmed

    gateway.start()  # the restart repairs a torn last line, if any
    gateway.stop()
    logged = {line.payload for device_dir in (gateway.remote_data / "tcp").iterdir()
              for _source, line in rawlog.read_lines(device_dir) if line is not None}
    missing = [p for p in confirmed if p not in logged]
    assert not missing, f"{len(missing)} of {len(confirmed)} confirmed packets not in the log"

    done = subprocess.run([sys.executable, "-m", "co2unit_server", "import",
                           "--data-dir", str(gateway.remote_data),
                           "--db-dir", str(gateway.var_dir),
                           "--deployments", str(tmp_path / "none.tsv")],
                          capture_output=True, text=True, timeout=300, env=gateway.environ())
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(gateway.var_dir / "db.sqlite3") as conn:
        lights = {(device, int(value)) for device, value in conn.execute(
            "SELECT device, value FROM measurements WHERE name = 'light'")}
        per_device = dict(conn.execute("SELECT device, count(*) FROM measurements "
                                       "WHERE name = 'light' GROUP BY device"))
    for data in confirmed:
        device_id, seq = data[7], struct.unpack_from("<H", data, 9)[0]
        assert (f"esp8266-{device_id}", seq) in lights
    # Exactly once: 30 records per logged packet, no more.
    for device_dir in (gateway.remote_data / "tcp").iterdir():
        valid = [line for _s, line in rawlog.read_lines(device_dir)
                 if line is not None and line.verdict == "ok"]
        assert per_device.get(device_dir.name, 0) == 30 * len(valid)
