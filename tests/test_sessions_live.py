"""Sessions and the live page against the real processes: the gateway with its WebSocket
devices, `co2unit-server session`, the admin API, and /live in headless Chromium."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import pytest
from gateway_fixtures import db_rows, wait_for
from websockets.asyncio.client import ClientConnection, connect

from co2unit_server import research
from co2unit_server.cli import main
from co2unit_server.core.config import load_config
from co2unit_server.gateways import control
from co2unit_server.records import users
from co2unit_server.server import auth
from co2unit_server.server.app import create_app
from co2unit_server.simulator.launcher import ServerProcess, free_port

from conftest import INI, chromium

DEVICES = 50
PASSWORD = "pw"


def ws_gateway(gateway_factory):
    return gateway_factory({"ws_gateway_port": str(free_port())})


def ws_url(port: int | str) -> str:
    return f"ws://127.0.0.1:{port}/"


async def device(port: int | str, device_id: str) -> tuple[ClientConnection, dict]:
    """A streaming device that said hello: its connection and the welcome it got."""
    ws = await connect(ws_url(port), open_timeout=10)
    await ws.send(json.dumps({"type": "hello", "device_id": device_id, "sensors": ["counter"]}))
    return ws, json.loads(await asyncio.wait_for(ws.recv(), 10))


async def send_reading(ws: ClientConnection, seq: int, value: float) -> None:
    """Send one reading and wait for its ack (the gateway stored it durably)."""
    ts = datetime.now(UTC).isoformat()
    await ws.send(json.dumps({"type": "readings", "seq": seq,
                              "readings": [{"ts": ts, "values": {"counter": value}}]}))
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if message == {"type": "ack", "seq": seq}:
            return


# --- the CLI reaching 50 devices -------------------------------------------------------------

async def broadcast_spread(port: int, argv: list[str], expect: str) -> tuple[float, str]:
    """Run `co2unit-server <argv>` with DEVICES connected: the longest time from the CLI's
    call to a device holding the command, and the session id the devices got."""
    links = await asyncio.gather(*(device(port, f"dev-{i:02d}") for i in range(DEVICES)))
    received: list[tuple[float, dict]] = []

    async def listen(ws: ClientConnection) -> None:
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        received.append((time.time(), message))

    listeners = [asyncio.create_task(listen(ws)) for ws, _ in links]
    await asyncio.sleep(0.2)  # every device attached before the command
    sent = time.time()
    assert await asyncio.to_thread(main, argv) == 0
    await asyncio.gather(*listeners)
    for ws, _ in links:
        await ws.close()
    commands = {(m["type"], m["command"], m["session"]) for _, m in received}
    assert len(received) == DEVICES and len(commands) == 1
    (kind, command, session), = commands
    assert (kind, command) == ("command", expect)
    return max(t for t, _ in received) - sent, session


def test_cli_start_and_stop_reach_50_connected_devices(gateway_factory, monkeypatch, capsys):
    gateway = ws_gateway(gateway_factory)
    monkeypatch.setenv("CO2UNIT_VAR_DIR", str(gateway.var_dir))
    monkeypatch.setenv("CO2UNIT_REMOTE_DATA_DIR", str(gateway.remote_data))
    port = int(gateway.settings["ws_gateway_port"])
    start_s, started = asyncio.run(broadcast_spread(
        port, ["session", "start", "--name", "drill 3"], "start"))
    out = capsys.readouterr().out
    assert f"session {started} (drill 3) running since" in out
    assert f"command sent to {DEVICES} connected devices" in out
    stop_s, stopped = asyncio.run(broadcast_spread(port, ["session", "stop"], "stop"))
    assert stopped == started and f"session {started} (drill 3) stopped at" in \
        capsys.readouterr().out
    with capsys.disabled():
        print(f"\nbroadcast to {DEVICES} devices, CLI call to the last device's receipt: "
              f"start {start_s * 1000:.1f} ms, stop {stop_s * 1000:.1f} ms")
    # Generous: a loaded CI machine. The 100 ms is measured by the benchmark.
    assert start_s < 1.0 and stop_s < 1.0


def test_cli_without_a_running_gateway_says_so(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "CO2UNIT_VAR_DIR": str(tmp_path / "var")}
    done = subprocess.run([sys.executable, "-m", "co2unit_server", "session", "show"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2
    assert "the gateway is not running" in done.stderr and "gateways.sock" in done.stderr


def test_session_in_welcome_and_readings_tagged_until_stop(gateway_factory):
    gateway = ws_gateway(gateway_factory)
    port = gateway.settings["ws_gateway_port"]
    env = {**gateway.environ(), "PATH": "/usr/bin:/bin"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "co2unit_server", "session", *args],
                              capture_output=True, text=True, timeout=60, env=env)

    async def run() -> tuple[str, dict, dict]:
        early, welcome_before = await device(port, "early")
        started = cli("start", "--name", "mid")
        assert started.returncode == 0, started.stderr
        session = json.loads(await asyncio.wait_for(early.recv(), 10))["session"]
        late, welcome_during = await device(port, "late")
        await send_reading(late, 1, 1.0)
        assert cli("stop").returncode == 0
        assert json.loads(await asyncio.wait_for(late.recv(), 10))["command"] == "stop"
        await send_reading(late, 2, 2.0)
        assert "no session is running" in cli("show").stdout
        await early.close()
        await late.close()
        return session, welcome_before, welcome_during

    session, before, during = asyncio.run(run())
    assert before == {"type": "welcome", "session": None}
    assert during["type"] == "welcome"
    assert (during["session"]["id"], during["session"]["state"]) == (session, "started")
    assert session.endswith("-mid")
    rows = wait_for(lambda: len(found := db_rows(
        gateway.var_dir / "db.sqlite3",
        "SELECT value, session FROM measurements WHERE device = 'late' ORDER BY ts")) == 2
        and found)
    assert rows == [(1.0, session), (2.0, None)]
    # Researchers select the session's readings by its id.
    frame = research.measurements(gateway.var_dir, session=session)
    assert list(frame["counter"]) == [1.0] and list(frame["device"]) == ["late"]
    listed = research.sessions(gateway.var_dir)
    assert list(listed["id"]) == [session] and listed["stopped_at"].notna().all()


def test_a_restarted_gateway_keeps_the_running_session(gateway_factory):
    gateway = ws_gateway(gateway_factory)
    port = gateway.settings["ws_gateway_port"]
    started = control.call(gateway.var_dir / "gateways.sock", "session-start", name="long")
    assert gateway.stop() == 0
    gateway.start()
    _, welcome = asyncio.run(device(port, "after-restart"))
    assert welcome["session"] == started["session"]
    shown = control.call(gateway.var_dir / "gateways.sock", "session-show")
    assert shown["session"]["id"] == started["session"]["id"]


# --- the admin API ---------------------------------------------------------------------------

def basic(user: str = "alice", password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def admin_client(tmp_path, monkeypatch):
    """An app behind the admin login over `tmp_path`'s var, where a gateway may run."""
    monkeypatch.setattr(users, "SCRYPT_PARAMS", {"n": 2**10, "r": 8, "p": 1})
    decoy = users.hash_password("decoy")
    monkeypatch.setattr(auth, "decoy_hash", lambda: decoy)
    users_file = tmp_path / "admin-users"
    users.add_user(users_file, "alice", PASSWORD)
    config = load_config({}, remote_data_dir=tmp_path / "remote_data", var_dir=tmp_path / "var",
                         min_free_bytes=0, admin_users_file=users_file)
    return create_app(config).test_client()


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/sessions"), ("POST", "/api/sessions/start"), ("POST", "/api/sessions/stop"),
    ("GET", "/live"), ("GET", "/api/live")])
def test_sessions_and_live_need_the_admin_login(admin_client, method, path):
    resp = admin_client.open(path, method=method)
    assert resp.status_code == 401 and resp.get_json()["error"] == "UNAUTHORIZED"
    resp = admin_client.open(path, method=method, headers=basic(password="wrong"))
    assert resp.status_code == 401


def test_api_starts_lists_and_stops_sessions(admin_client, gateway_factory):
    ws_gateway(gateway_factory)
    start = admin_client.post("/api/sessions/start", json={"name": "api run"}, headers=basic())
    assert start.status_code == 200, start.data
    session = start.get_json()["session"]
    assert session["state"] == "started" and session["id"].endswith("-api-run")
    assert start.get_json()["devices_reached"] == 0
    again = admin_client.post("/api/sessions/start", headers=basic())
    assert again.status_code == 409 and again.get_json()["error"] == "SESSION_CONFLICT"
    assert session["id"] in again.get_json()["message"]
    listing = admin_client.get("/api/sessions", headers=basic()).get_json()
    assert listing["current"] == session and listing["sessions"] == [session]
    stop = admin_client.post("/api/sessions/stop", headers=basic())
    assert stop.status_code == 200 and stop.get_json()["session"]["state"] == "stopped"
    twice = admin_client.post("/api/sessions/stop", headers=basic())
    assert twice.status_code == 409 and "no session is running" in twice.get_json()["message"]
    listing = admin_client.get("/api/sessions", headers=basic()).get_json()
    assert listing["current"] is None
    (only,) = listing["sessions"]
    assert only["id"] == session["id"] and only["stopped_at"].endswith("Z")
    # The fleet page lists it too.
    fleet = admin_client.get("/fleet", headers=basic()).get_data(as_text=True)
    assert "Streaming sessions" in fleet and session["id"] in fleet


def test_the_live_page_forms_post_and_come_back(admin_client, gateway_factory):
    ws_gateway(gateway_factory)
    form = {"name": "from the page", "next": "/live"}
    resp = admin_client.post("/api/sessions/start", data=form, headers=basic())
    assert resp.status_code == 303 and resp.headers["Location"] == "/live"
    page = admin_client.get("/live", headers=basic()).get_data(as_text=True)
    assert "from the page" in page and "<form id=start" in page
    assert re.search(r"<form id=start [^>]*hidden", page)
    again = admin_client.post("/api/sessions/start", data=form, headers=basic())
    assert again.status_code == 303 and again.headers["Location"].startswith("/live?error=")
    shown = admin_client.get(again.headers["Location"], headers=basic()).get_data(as_text=True)
    assert "<p id=error" in shown and "is running since" in shown
    # Another site's page cannot use the admin's browser to stop it; nor send it elsewhere.
    evil = admin_client.post("/api/sessions/stop", data={"next": "/live"},
                             headers={**basic(), "Origin": "https://evil.example"})
    assert evil.status_code == 403 and evil.get_json()["error"] == "CROSS_ORIGIN"
    away = admin_client.post("/api/sessions/stop", data={"next": "//evil.example/x"},
                             headers=basic())
    assert away.status_code == 400
    same = admin_client.post("/api/sessions/stop", data={"next": "/live"},
                             headers={**basic(), "Origin": "http://localhost"})
    assert same.status_code == 303 and same.headers["Location"] == "/live"


def test_without_the_gateway_503_and_the_live_feed_falls_back(admin_client, caplog):
    resp = admin_client.post("/api/sessions/start", headers=basic())
    assert resp.status_code == 503 and resp.get_json()["error"] == "GATEWAY_UNAVAILABLE"
    assert "gateway unavailable" in caplog.text
    assert admin_client.post("/api/sessions/stop", headers=basic()).status_code == 503
    live = admin_client.get("/api/live", headers=basic()).get_json()
    assert live["gateway"]["running"] is False and "gateways.sock" in live["gateway"]["message"]
    assert live["devices"] == [] and live["session"] is None
    assert admin_client.get("/api/sessions", headers=basic()).get_json() == {
        "current": None, "sessions": []}
    assert "Gateway not answering" in admin_client.get("/live", headers=basic()).get_data(
        as_text=True)
    bad = admin_client.post("/api/sessions/start", json={"name": "x" * 101}, headers=basic())
    assert bad.status_code == 400


def test_the_live_feed_has_connected_and_stored_devices(admin_client, gateway_factory, tmp_path):
    gateway = ws_gateway(gateway_factory)
    port = gateway.settings["ws_gateway_port"]

    async def run() -> dict:
        gone, _ = await device(port, "gone")
        await send_reading(gone, 1, 5.0)
        await gone.close()
        here, _ = await device(port, "here")
        await send_reading(here, 1, 7.0)
        return admin_client.get("/api/live", headers=basic()).get_json()

    live = asyncio.run(run())
    assert live["gateway"]["running"] is True
    by_id = {d["device"]: d for d in live["devices"]}
    assert [d["device"] for d in live["devices"]] == ["here", "gone"]  # connected first
    assert by_id["here"]["connected"] and not by_id["gone"]["connected"]
    assert by_id["here"]["values"]["counter"]["value"] == 7.0
    assert by_id["here"]["messages_per_s"] > 0
    # With the gateway gone, the database still knows both, and their last values.
    gateway.stop()
    live = admin_client.get("/api/live", headers=basic()).get_json()
    assert live["gateway"]["running"] is False
    assert {d["device"]: d["values"]["counter"]["value"] for d in live["devices"]} == {
        "gone": 5.0, "here": 7.0}
    assert all(d["last_message_at"].endswith("Z") for d in live["devices"])


# --- /live in a browser ----------------------------------------------------------------------

class CountingDevice(threading.Thread):
    """A device that streams an increasing counter every 20 ms while `running` is set."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.running = threading.Event()
        self.done = threading.Event()
        self.value = 0

    def run(self) -> None:
        asyncio.run(self._stream())

    async def _stream(self) -> None:
        ws, _ = await device(self.port, "counter-1")
        while not self.done.is_set():
            if self.running.is_set():
                self.value += 1
                await send_reading(ws, self.value, float(self.value))
            await asyncio.sleep(0.02)
        await ws.close()


def dom_counter(html: str) -> int:
    """The counter value the live table shows."""
    match = re.search(r'data-device="counter-1".*?counter (\d+)', html, re.S)
    assert match, html[-3000:]
    return int(match.group(1))


@pytest.fixture
def logging_server(tmp_path):
    """The real server (uWSGI, and the gateway it starts) with a WebSocket port and request
    logging on: the test sees in its log when the page has been rendered."""
    ini = tmp_path / "server.ini"
    ini.write_text(INI.read_text().replace("disable-logging = true\n", ""))
    server = ServerProcess(tmp_path, ini, {"CO2UNIT_WS_GATEWAY_PORT": str(free_port()),
                                           "CO2UNIT_GATEWAY_HOST": "127.0.0.1"})
    with server:
        yield server


def test_live_page_values_change_without_reload(logging_server, tmp_path):
    server = logging_server
    ws_port = int(server.env["CO2UNIT_WS_GATEWAY_PORT"])
    wait_for(lambda: _accepts(ws_port), 30)
    streamer = CountingDevice(ws_port)
    streamer.start()
    try:
        streamer.running.set()
        assert wait_for(lambda: _live_counter(server) >= 5, 20)
        streamer.running.clear()
        time.sleep(0.1)  # its last message is in
        rendered = streamer.value
        assert wait_for(lambda: _live_counter(server) == rendered, 10)
        # The page is rendered with `rendered`; the device goes on only once it has been,
        # so every newer value on the page came by the page's own polling.
        browser = threading.Thread(target=lambda: result.append(chromium(
            tmp_path, "--virtual-time-budget=600000", "--dump-dom", f"{server.url}/live")))
        result: list[subprocess.CompletedProcess] = []
        browser.start()
        assert wait_for(lambda: "GET /live " in server.log_path.read_text(errors="replace"),
                        60)
        streamer.running.set()
        browser.join(timeout=200)
        assert result, "chromium did not finish"
    finally:
        streamer.done.set()
        streamer.join(timeout=10)
    shown = dom_counter(result[0].stdout)
    print(f"\n/live rendered counter {rendered}, the page showed {shown} without reloading")
    assert shown > rendered
    assert "<script src" not in result[0].stdout  # our own inline script, nothing fetched


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
        return True
    return False


def _live_counter(server) -> int:
    reply = server.request("GET", "/api/live")
    devices = {d["device"]: d for d in reply.json()["devices"]}
    counter = devices.get("counter-1", {}).get("values", {}).get("counter")
    return int(counter["value"]) if counter else -1
