"""The WebSocket gateway as streaming devices meet it: the real process, real clients, loopback."""

from __future__ import annotations

import ast
import asyncio
import base64
import contextlib
import json
import logging
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from gateway_fixtures import query, wait_for
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from co2unit_server.core.config import load_config
from co2unit_server.gateways import ws_gateway
from co2unit_server.gateways.control import call
from co2unit_server.gateways.session_keeper import SessionKeeper
from co2unit_server.gateways.ws_gateway import WsGateway, _Device
from co2unit_server.records import ws_format
from co2unit_server.records.rawlog import GroupCommit, log_files
from co2unit_server.records.ws_format import Readings, WsLine, retry_after, retry_reason, retry_wait
from co2unit_server.records.ws_seqs import SAVED_FILE, SeqState, read_state
from co2unit_server.simulator.launcher import GatewayProcess, free_port

T0 = datetime(2026, 12, 6, 1, 0, tzinfo=UTC)
WAIT = 20.0  # seconds any single answer may take, at most (a bound, not a speed claim)


def message(seq: int, value: float | None = None, at: str | None = None,
            **values: object) -> str:
    """A readings message measured `seq` seconds after T0 whose co2 is its seq (unless told)."""
    at = at or (T0 + timedelta(seconds=seq)).isoformat().replace("+00:00", "Z")
    return json.dumps({"type": "readings", "seq": seq, "readings": [
        {"ts": at, "values": values or {"co2": float(seq) if value is None else value}}]})


def hello(device: str = "dev-1", **extra: object) -> str:
    return json.dumps({"type": "hello", "device_id": device, "sensors": ["co2"], **extra})


def start(gateway_factory, **settings: str) -> GatewayProcess:
    return gateway_factory({"ws_gateway_port": str(free_port()), **settings})


def url(gateway: GatewayProcess, path: str = "/") -> str:
    return f"ws://127.0.0.1:{gateway.settings['ws_gateway_port']}{path}"


def recv(ws: ClientConnection) -> dict:
    return json.loads(ws.recv(timeout=WAIT))


@contextlib.contextmanager
def device(gateway: GatewayProcess, name: str = "dev-1", **extra: object
           ) -> Iterator[ClientConnection]:
    """A connected device that said hello and got its welcome."""
    with connect(url(gateway), open_timeout=WAIT) as ws:
        ws.send(hello(name, **extra))
        assert recv(ws)["type"] == "welcome"
        yield ws


def closed_with(ws: ClientConnection) -> int:
    """The close code the gateway sent (messages before it are read and dropped)."""
    with pytest.raises(ConnectionClosed) as closed:
        for _ in range(1000):
            ws.recv(timeout=WAIT)
    assert closed.value.rcvd is not None, closed.value
    return closed.value.rcvd.code


def lines(gateway: GatewayProcess, name: str = "dev-1") -> list[WsLine]:
    found = []
    for path in log_files(gateway.remote_data / "ws" / name):
        found += [WsLine.parse(raw) for raw in path.read_bytes().splitlines()]
    return found


def stored_values(gateway: GatewayProcess, name: str = "dev-1", count: int = 0) -> list[float]:
    """The device's co2 values in the table (waiting, bounded, until there are `count`)."""
    def values() -> list[float]:
        return [v for (v,) in query(gateway, "SELECT value FROM measurements WHERE device = ? "
                                    "AND name = 'co2' ORDER BY value", name)]
    wait_for(lambda: len(values()) >= count)
    return values()


# --- the exchange -----------------------------------------------------------------------------


def test_hello_welcome_and_pipelined_readings_acked_in_order(gateway_factory):
    gateway = start(gateway_factory)
    with device(gateway) as ws:
        for seq in range(50):  # without waiting for acks
            ws.send(message(seq))
        assert [recv(ws) for _ in range(50)] == [{"type": "ack", "seq": s} for s in range(50)]
    logged = lines(gateway)
    assert [line.seq for line in logged] == list(range(50))
    assert {line.session for line in logged} == {None}
    assert json.loads(logged[7].raw) == json.loads(message(7))
    assert stored_values(gateway, count=50) == [float(s) for s in range(50)]
    assert query(gateway, "SELECT source, ts, verdict, stored, detail FROM gateway_receipts "
                 "WHERE device = 'dev-1' ORDER BY ts LIMIT 1") == [
        ("ws/dev-1/0000.log:1", logged[0].ts, "ok", 1, "seq 0")]
    assert query(gateway, "SELECT ts, family FROM measurements ORDER BY ts LIMIT 2") == [
        ("2026-12-06T01:00:00.000000", "ws"), ("2026-12-06T01:00:01.000000", "ws")]


def test_readings_sent_with_the_hello_are_taken_in_order(gateway_factory):
    gateway = start(gateway_factory)
    with connect(url(gateway), open_timeout=WAIT) as ws:
        ws.send(hello())  # and on, before the welcome (while the gateway reads the raw log)
        for seq in range(1, 101):
            ws.send(message(seq))
        assert recv(ws)["type"] == "welcome"
        assert [recv(ws) for _ in range(100)] == [{"type": "ack", "seq": s}
                                                 for s in range(1, 101)]
    assert [line.seq for line in lines(gateway)] == list(range(1, 101))


def test_a_fragmented_message_is_taken_whole_and_text_not_utf8_is_refused(gateway_factory):
    gateway = start(gateway_factory)
    with device(gateway) as ws:
        text = message(1)
        ws.send([text[:10], text[10:30], text[30:]])  # three frames, one message
        assert recv(ws) == {"type": "ack", "seq": 1}
        ws.send(b"\xff\xfe{", text=True)
        answer = recv(ws)
        assert (answer["type"], answer["error"]) == ("error", "BAD_MESSAGE")
        ws.send(message(2))
        assert recv(ws) == {"type": "ack", "seq": 2}
    assert [line.raw for line in lines(gateway)] == [text, message(2)]


def test_the_welcome_answers_the_hello_only(gateway_factory):
    gateway = start(gateway_factory)
    with connect(url(gateway)) as ws:
        ws.send(message(0))  # not a hello first
        assert recv(ws)["error"] == "HELLO_FIRST"
        assert closed_with(ws) == 1008
    with connect(url(gateway)) as ws:
        ws.send(hello("no/slashes"))
        assert recv(ws)["error"] == "BAD_DEVICE_ID"
        assert closed_with(ws) == 1008
    assert not (gateway.remote_data / "ws").exists() or not lines(gateway)


def test_no_hello_in_time_is_closed(gateway_factory):
    gateway = start(gateway_factory, ws_keepalive_seconds="0.5")
    with connect(url(gateway)) as ws:
        assert recv(ws)["error"] == "HELLO_TIMEOUT"
        assert closed_with(ws) == 1008


def test_a_kill_right_after_an_ack_loses_nothing(gateway_factory, tmp_path):
    gateway = start(gateway_factory)
    with device(gateway) as ws:
        for seq in range(10):
            ws.send(message(seq))
        assert [recv(ws)["seq"] for _ in range(10)] == list(range(10))
        gateway.kill(signal.SIGKILL)  # right after the last ack
    assert [line.seq for line in lines(gateway)] == list(range(10))
    gateway.start()
    with device(gateway) as ws:  # the device did not see the last ack: it resends
        ws.send(message(9))
        ws.send(message(10))
        assert [recv(ws)["seq"] for _ in range(2)] == [9, 10]
    assert gateway.stop() == 0
    assert [line.seq for line in lines(gateway)] == list(range(11))  # seq 9 once
    done = subprocess.run([sys.executable, "-m", "co2unit_server", "import", "--data-dir",
                           str(gateway.remote_data), "--db-dir", str(gateway.var_dir)],
                          capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items()
                               if not k.startswith("CO2UNIT_")})
    assert done.returncode == 0, done.stderr
    assert stored_values(gateway) == [float(s) for s in range(11)]
    assert query(gateway, "SELECT count(*) FROM gateway_receipts") == [(11,)]


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(stat.parent.name))
    return children


def _ended(pid: int) -> bool:
    """Whether the process is gone (or a zombie no one has reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_the_store_writer_of_a_killed_gateway_stores_what_it_has_and_ends(gateway_factory):
    gateway = start(gateway_factory)
    with device(gateway) as ws:
        ws.send(message(0))
        assert recv(ws)["seq"] == 0
        assert stored_values(gateway, count=1) == [0.0]  # the writer's first transaction
        (writer,) = _children(gateway.proc.pid)  # co2unit_server.database.store_writer
        for seq in range(1, 10):
            ws.send(message(seq))
        assert [recv(ws)["seq"] for _ in range(9)] == list(range(1, 10))
        time.sleep(0.2)  # handed over to the writer, whose next transaction is 1 s after
        assert stored_values(gateway) == [0.0]
        os.kill(gateway.proc.pid, signal.SIGKILL)  # the gateway alone, not its group
        gateway.proc.wait(WAIT)
    assert wait_for(lambda: _ended(writer))
    assert stored_values(gateway, count=10) == [float(s) for s in range(10)]  # no import


def test_a_clean_restart_takes_the_saved_seqs_while_the_log_holds(gateway_factory):
    gateway = start(gateway_factory)
    with device(gateway) as ws:
        for seq in range(5):
            ws.send(message(seq))
        assert [recv(ws)["seq"] for _ in range(5)] == list(range(5))
    assert gateway.stop() == 0
    saved = gateway.var_dir / SAVED_FILE
    state = json.loads(saved.read_text())
    assert state["devices"]["dev-1"]["seqs"] == [[0, 4]]
    assert (state["devices"]["dev-1"]["newest"], state["devices"]["dev-1"]["floor"]) == (
        "2026-12-06T01:00:04.000000", 0)
    # That the next start takes them, shown with a seq the log does not have: taken as stored.
    state["devices"]["dev-1"]["seqs"] = [[0, 4], [7, 7]]
    state["devices"]["dev-1"]["newest"] = "2026-12-06T01:00:07.000000"
    saved.write_text(json.dumps(state))
    gateway.start()
    assert not saved.exists()  # taken: a crash from now on leaves every log to be read
    with device(gateway) as ws:
        ws.send(message(7))
        ws.send(message(3))
        assert [recv(ws) for _ in range(2)] == [{"type": "ack", "seq": 7},
                                                {"type": "ack", "seq": 3}]
    assert gateway.stop() == 0
    assert [line.seq for line in lines(gateway)] == [0, 1, 2, 3, 4]
    # A log that changed since the save (here a line appended by hand) is read instead.
    state = json.loads(saved.read_text())
    state["devices"]["dev-1"]["seqs"].append([9, 9])
    saved.write_text(json.dumps(state))
    (log_file,) = log_files(gateway.remote_data / "ws" / "dev-1")
    with open(log_file, "ab") as f:
        f.write(WsLine("2026-12-06T01:00:05.000000", "p", None, 5, message(5)).encode())
    gateway.start()
    with device(gateway) as ws:
        ws.send(message(9))  # new: the log says 5 is the highest
        ws.send(message(5))  # in the log: acknowledged again
        assert [recv(ws)["seq"] for _ in range(2)] == [9, 5]
    assert gateway.stop() == 0
    assert [line.seq for line in lines(gateway)] == [0, 1, 2, 3, 4, 5, 9]


def test_a_resend_is_acked_again_and_stored_once(gateway_factory):
    gateway = start(gateway_factory)
    with device(gateway) as ws:
        for seq in range(3):
            ws.send(message(seq))
        assert [recv(ws)["seq"] for _ in range(3)] == [0, 1, 2]
        ws.send(message(2))  # on the same connection too
        assert recv(ws) == {"type": "ack", "seq": 2}
    with device(gateway) as ws:  # reconnected: resends 1 and 2, then goes on
        for seq in (1, 2, 3):
            ws.send(message(seq, value=100.0 + seq))
        assert [recv(ws)["seq"] for _ in range(3)] == [1, 2, 3]
    assert gateway.stop() == 0
    gateway.start()  # a new process reads what was stored from the raw log
    with device(gateway) as ws:
        ws.send(message(3))
        assert recv(ws) == {"type": "ack", "seq": 3}
    assert [line.seq for line in lines(gateway)] == [0, 1, 2, 3]
    assert stored_values(gateway, count=4) == [0.0, 1.0, 2.0, 103.0]  # the first of each


def test_a_seq_below_the_highest_never_stored_is_out_of_order(gateway_factory):
    gateway = start(gateway_factory)
    with device(gateway) as ws:
        ws.send(message(5))
        assert recv(ws)["seq"] == 5
        ws.send(message(3))
        answer = recv(ws)
        assert answer["type"] == "error" and answer["error"] == "OUT_OF_ORDER"
        ws.send(message(6))
        assert recv(ws) == {"type": "ack", "seq": 6}  # still open
    assert [line.seq for line in lines(gateway)] == [5, 6]


def restarted(seq: int, minutes: int = 60) -> str:
    """Message `seq` of the device after a restart `minutes` from T0 (its seqs begin again; its
    co2 is 1000 + seq)."""
    at = T0 + timedelta(minutes=minutes, seconds=seq)
    return message(seq, value=1000.0 + seq, at=at.isoformat().replace("+00:00", "Z"))


def acks(ws: ClientConnection, count: int) -> list[int]:
    return [recv(ws)["seq"] for _ in range(count)]


def test_a_device_that_starts_its_seqs_again_is_stored(gateway_factory):
    gateway = start(gateway_factory)
    with device(gateway) as ws:
        for seq in range(1, 6):
            ws.send(message(seq))
        assert acks(ws, 5) == [1, 2, 3, 4, 5]
    with device(gateway) as ws:  # restarted (a battery swap): its seqs begin at 1 again
        for seq in (1, 2, 3, 3):  # and a resend of the new 3
            ws.send(restarted(seq))
        assert acks(ws, 4) == [1, 2, 3, 3]
    assert len(stored_values(gateway, count=8)) == 8  # in the table before the kill
    gateway.kill(signal.SIGKILL)
    gateway.start()  # the new sequence read from the raw log
    with device(gateway) as ws:
        ws.send(restarted(3))  # its ack was lost with the kill: a resend
        ws.send(restarted(4))
        assert acks(ws, 2) == [3, 4]
    assert gateway.stop() == 0
    gateway.start()  # the new sequence as saved at the stop
    with device(gateway) as ws:
        ws.send(restarted(4))
        ws.send(restarted(5))
        assert acks(ws, 2) == [4, 5]
    assert gateway.stop() == 0
    assert [(line.seq, line.new_sequence) for line in lines(gateway)] == [
        (1, False), (2, False), (3, False), (4, False), (5, False),
        (1, True), (2, False), (3, False), (4, False), (5, False)]
    assert stored_values(gateway, count=10) == [1.0, 2.0, 3.0, 4.0, 5.0,
                                                1001.0, 1002.0, 1003.0, 1004.0, 1005.0]


def test_a_restarted_device_whose_clock_is_behind_is_stored(gateway_factory):
    gateway = start(gateway_factory)
    with device(gateway) as ws:
        for seq in (1, 2, 3):
            ws.send(message(seq))
        assert acks(ws, 3) == [1, 2, 3]
    with device(gateway) as ws:  # everything below 4 was acknowledged: it begins with 4
        for seq in (4, 5, 6):
            ws.send(message(seq))
        assert acks(ws, 3) == [4, 5, 6]
    assert len(stored_values(gateway, count=6)) == 6  # in the table before the kill
    gateway.kill(signal.SIGKILL)  # what it sent first on its last connection: from the log
    gateway.start()
    with device(gateway) as ws:  # restarted, its clock an hour behind: readings look old,
        ws.send(restarted(1, minutes=-60))  # but a device resends nothing below 4 now
        ws.send(restarted(2, minutes=-60))
        assert acks(ws, 2) == [1, 2]
    assert gateway.stop() == 0
    gateway.start()
    with device(gateway) as ws:
        ws.send(restarted(2, minutes=-60))  # a resend after all
        ws.send(restarted(3, minutes=-60))
        ws.send(restarted(0, minutes=-60))  # below, never stored, not first: out of order
        assert acks(ws, 2) == [2, 3]
        assert recv(ws)["error"] == "OUT_OF_ORDER"
    assert [(line.seq, line.new_sequence) for line in lines(gateway)] == [
        (1, False), (2, False), (3, False), (4, False), (5, False), (6, False),
        (1, True), (2, False), (3, False)]
    assert stored_values(gateway, count=9) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0,
                                               1001.0, 1002.0, 1003.0]


def test_a_message_of_readings_without_values_is_acked_and_stored_once(gateway_factory):
    empty = json.dumps({"type": "readings", "seq": 1, "readings": [
        {"ts": "2026-12-06T01:00:01Z", "values": {}}]})
    gateway = start(gateway_factory)
    with device(gateway) as ws:
        ws.send(empty)
        ws.send(empty)
        ws.send(message(2))
        assert acks(ws, 3) == [1, 1, 2]
    assert [line.seq for line in lines(gateway)] == [1, 2]
    assert "failed" not in gateway.log_text()


def test_values_of_a_name_at_one_time_in_a_message_make_a_partial_receipt(gateway_factory):
    twice = json.dumps({"type": "readings", "seq": 1, "readings": [
        {"ts": "2026-12-06T01:00:01Z", "values": {"co2": 1.0}},
        {"ts": "2026-12-06T01:00:01Z", "values": {"co2": 2.0}}]})  # a clock coarser than this
    gateway = start(gateway_factory)
    with device(gateway) as ws:
        ws.send(twice)
        assert acks(ws, 1) == [1]
    assert [line.raw for line in lines(gateway)] == [twice]  # both values in the raw log
    assert stored_values(gateway, count=1) == [1.0]  # one value per name and time: the first
    assert wait_for(lambda: query(gateway, "SELECT verdict, stored FROM gateway_receipts")) == [
        ("partial", 1)]


@pytest.mark.parametrize(("sent", "code"), [
    ("{not json", "BAD_JSON"),
    (json.dumps({"type": "status"}), "UNKNOWN_TYPE"),
    (json.dumps([1, 2]), "BAD_MESSAGE"),
    (hello(), "HELLO_AGAIN"),
    (b"\x00\x01", "BAD_MESSAGE"),  # a binary frame
    ('{"type": "readings", "seq": 1, "readings": [{"ts": "2026-12-06T01:00:00Z", '
     '"values": {"co2": NaN}}]}', "BAD_MESSAGE"),
    (message(1, co2="415"), "BAD_MESSAGE"),
    (message(1, at="yesterday"), "BAD_MESSAGE"),
    (message(1, at="2026-13-40T00:00:00Z"), "BAD_MESSAGE"),
    (json.dumps({"type": "readings", "seq": -1, "readings": []}), "BAD_MESSAGE"),
    (json.dumps({"type": "readings", "seq": 1, "readings": []}), "BAD_MESSAGE"),
])
def test_a_bad_message_gets_an_error_and_the_connection_stays(gateway_factory, sent, code):
    gateway = start(gateway_factory)
    with device(gateway) as ws:
        ws.send(sent)
        answer = recv(ws)
        assert (answer["type"], answer["error"]) == ("error", code)
        assert answer["message"]
        ws.send(message(1))
        assert recv(ws) == {"type": "ack", "seq": 1}
    assert [line.seq for line in lines(gateway)] == [1]
    assert "ws dev-1 at 127.0.0.1:" in gateway.log_text() and code in gateway.log_text()


def test_an_oversized_frame_closes_1009_and_the_gateway_goes_on(gateway_factory):
    gateway = start(gateway_factory, ws_max_message_bytes="1000")
    with device(gateway) as ws:
        ws.send(message(1, comment_padding=1.0, **{f"v{i:04d}": 1.0 for i in range(100)}))
        assert closed_with(ws) == 1009
    with device(gateway) as ws:
        ws.send(message(2))
        assert recv(ws) == {"type": "ack", "seq": 2}
    assert "closed 1009" in gateway.log_text()


def test_an_error_flood_closes_1008(gateway_factory):
    gateway = start(gateway_factory, ws_max_errors_per_minute="3")
    with device(gateway) as ws:
        for _ in range(4):
            ws.send("{")
        assert [recv(ws)["error"] for _ in range(4)] == ["BAD_JSON"] * 4
        assert closed_with(ws) == 1008
    assert "over 3 errors in a minute" in gateway.log_text()


def test_a_second_connection_of_a_device_replaces_the_first(gateway_factory):
    gateway = start(gateway_factory)
    with device(gateway) as first:
        first.send(message(0))
        assert recv(first)["seq"] == 0
        with device(gateway) as second:
            assert closed_with(first) == 4409
            second.send(message(0))
            second.send(message(1))
            assert [recv(second)["seq"] for _ in range(2)] == [0, 1]
    assert [line.seq for line in lines(gateway)] == [0, 1]


# --- who may connect --------------------------------------------------------------------------


def add_device(tokens: Path, name: str) -> str:
    done = subprocess.run([sys.executable, "-m", "co2unit_server", "add-device", name],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "CO2UNIT_WS_TOKENS_FILE": str(tokens)})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_tokens_are_required_when_a_tokens_file_is_set(gateway_factory, tmp_path):
    tokens = tmp_path / "ws_tokens"
    token = add_device(tokens, "dev-1")
    gateway = start(gateway_factory, ws_tokens_file=str(tokens))
    for extra in ({}, {"token": "wrong"}, {"token": token + "x"}):
        with connect(url(gateway)) as ws:
            ws.send(hello("dev-1", **extra))
            assert recv(ws)["error"] == "BAD_TOKEN"
            assert closed_with(ws) == 4401
    with device(gateway, "dev-1", token=token) as ws:
        ws.send(message(0))
        assert recv(ws)["seq"] == 0
    with connect(url(gateway)) as ws:  # another device's token is no good
        ws.send(hello("dev-2", token=token))
        assert closed_with(ws) == 4401
    second = add_device(tokens, "dev-2")  # read again by the running gateway
    with device(gateway, "dev-2", token=second):
        pass
    assert "BAD_TOKEN" in gateway.log_text()


def test_browsers_from_other_origins_are_refused(gateway_factory):
    gateway = start(gateway_factory)
    with pytest.raises(InvalidStatus) as refused:
        connect(url(gateway), origin="https://evil.example")
    assert refused.value.response.status_code == 403


def test_allowed_origins_and_devices_without_one(gateway_factory):
    gateway = start(gateway_factory, ws_allowed_origins="https://lab.example")
    with device(gateway):  # no Origin: a device
        pass
    with connect(url(gateway), origin="https://lab.example") as ws:
        ws.send(hello())
        assert recv(ws)["type"] == "welcome"
    with pytest.raises(InvalidStatus) as refused:
        connect(url(gateway), origin="https://evil.example")
    assert refused.value.response.status_code == 403


def test_only_the_root_path_is_served(gateway_factory):
    gateway = start(gateway_factory)
    with pytest.raises(InvalidStatus) as refused:
        connect(url(gateway, "/devices"))
    assert refused.value.response.status_code == 404
    with connect(url(gateway, "/?v=1")) as ws:
        ws.send(hello())
        assert recv(ws)["type"] == "welcome"


# --- keepalive, with the frames as they go over the wire --------------------------------------


def raw_connect(gateway: GatewayProcess) -> socket.socket:
    """A TCP connection through the opening handshake, frames left to the caller."""
    s = socket.create_connection(("127.0.0.1", int(gateway.settings["ws_gateway_port"])),
                                 timeout=WAIT)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade"
              f"\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    return s


def send_frame(s: socket.socket, opcode: int, payload: bytes) -> None:
    mask = os.urandom(4)  # a client masks every frame
    assert len(payload) < 126
    s.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask
              + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def read_exact(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def read_frame(s: socket.socket) -> tuple[int, bytes]:
    first, second = read_exact(s, 2)
    size = second & 0x7F
    if size == 126:
        size = struct.unpack("!H", read_exact(s, 2))[0]
    elif size == 127:
        size = struct.unpack("!Q", read_exact(s, 8))[0]
    return first & 0x0F, read_exact(s, size)


def test_keepalive_pings_and_drops_a_silent_device(gateway_factory):
    gateway = start(gateway_factory, ws_keepalive_seconds="0.5")
    with contextlib.closing(raw_connect(gateway)) as s:
        send_frame(s, 0x1, hello().encode())
        opcodes = []
        with contextlib.suppress(EOFError, ConnectionError):
            for _ in range(10):  # welcome, pings never answered, then the close
                opcode, payload = read_frame(s)
                opcodes.append(opcode)
                if opcode == 0x8:
                    assert struct.unpack("!H", payload[:2])[0] == 1011  # ping timeout
                    break
        assert opcodes[0] == 0x1 and 0x9 in opcodes and opcodes[-1] == 0x8, opcodes


# --- sessions and status ----------------------------------------------------------------------


async def hello_many(gateway: GatewayProcess, count: int) -> list:
    devices = []
    for i in range(count):
        ws = await async_connect(url(gateway), open_timeout=WAIT)
        await ws.send(hello(f"dev-{i}"))
        assert json.loads(await asyncio.wait_for(ws.recv(), WAIT))["type"] == "welcome"
        devices.append(ws)
    return devices


def test_a_session_reaches_every_device_and_tags_their_readings(gateway_factory):
    gateway = start(gateway_factory)
    control = gateway.var_dir / "gateways.sock"

    async def main() -> None:
        devices = await hello_many(gateway, 50)
        answer = await asyncio.to_thread(call, control, "session-start", name="drill")
        assert answer["ok"] and answer["devices_reached"] == 50, answer
        session = answer["session"]["id"]
        commands = await asyncio.gather(*(asyncio.wait_for(ws.recv(), WAIT) for ws in devices))
        for text in commands:
            assert json.loads(text) == {"type": "command", "command": "start",
                                        "session": session,
                                        "at": answer["session"]["started_at"]}
        await devices[0].send(message(0))
        assert json.loads(await asyncio.wait_for(devices[0].recv(), WAIT))["seq"] == 0
        late = await async_connect(url(gateway))
        await late.send(hello("late"))
        welcome = json.loads(await asyncio.wait_for(late.recv(), WAIT))
        assert welcome["session"]["id"] == session and welcome["session"]["state"] == "started"
        status = await asyncio.to_thread(call, control, "status")
        assert status["session"]["id"] == session
        assert len([d for d in status["devices"] if d["connected"]]) == 51
        first = next(d for d in status["devices"] if d["device"] == "dev-0")
        assert (first["readings_received"], first["readings_acked"], first["highest_seq"],
                first["sensors"], first["latest"]["co2"]["value"]) == (1, 1, 0, ["co2"], 0.0)
        assert first["latest"]["co2"]["ts"] == "2026-12-06T01:00:00.000000Z"
        stop = await asyncio.to_thread(call, control, "session-stop")
        assert stop["devices_reached"] == 51
        assert json.loads(await asyncio.wait_for(late.recv(), WAIT))["command"] == "stop"
        for ws in [*devices, late]:
            await ws.close()
        return session

    session = asyncio.run(main())
    assert [line.session for line in lines(gateway, "dev-0")] == [session]
    wait_for(lambda: query(gateway, "SELECT session FROM measurements"))
    assert query(gateway, "SELECT session FROM measurements") == [(session,)]


# --- stopping, and one device among others ----------------------------------------------------


async def stream(gateway: GatewayProcess, name: str, acked: list[int], pause: float) -> int:
    """Send readings until the gateway closes; the acked seqs go to `acked`; returns the close
    code the gateway sent."""
    ws = await async_connect(url(gateway), open_timeout=WAIT)
    await ws.send(hello(name))
    assert json.loads(await ws.recv())["type"] == "welcome"

    async def send() -> None:
        with contextlib.suppress(ConnectionClosed):
            for seq in range(100_000):
                await ws.send(message(seq))
                await asyncio.sleep(pause)

    sender = asyncio.create_task(send())
    try:
        async for text in ws:
            answer = json.loads(text)
            assert answer["type"] == "ack", answer
            acked.append(answer["seq"])
    finally:
        sender.cancel()
    assert ws.close_code is not None
    return ws.close_code


def test_sigterm_while_devices_stream_stores_every_acked_reading(gateway_factory):
    gateway = start(gateway_factory)
    acked: dict[str, list[int]] = {f"dev-{i}": [] for i in range(5)}

    async def main() -> list[int]:
        streams = [asyncio.create_task(stream(gateway, name, seqs, 0.002))
                   for name, seqs in acked.items()]
        for _ in range(int(WAIT / 0.05)):
            if all(len(seqs) >= 20 for seqs in acked.values()):
                break
            await asyncio.sleep(0.05)
        gateway.proc.send_signal(signal.SIGTERM)
        return list(await asyncio.wait_for(asyncio.gather(*streams), WAIT))

    codes = asyncio.run(main())
    assert codes == [1001] * 5
    assert gateway.proc.wait(timeout=WAIT) == 0
    for name, seqs in acked.items():
        assert len(seqs) >= 20 and seqs == list(range(len(seqs)))  # in order, none missing
        assert set(seqs) <= {line.seq for line in lines(gateway, name)}
        assert set(stored_values(gateway, name)) >= {float(s) for s in seqs}, name
        details = {d for (d,) in query(gateway, "SELECT detail FROM gateway_receipts WHERE "
                                       "device = ?", name)}
        assert details >= {f"seq {s}" for s in seqs}


def test_a_misbehaving_device_does_not_hold_up_the_others(gateway_factory):
    gateway = start(gateway_factory, ws_max_errors_per_minute="1000000")
    # The flooder reads nothing (a small receive buffer, one queued message at most), so its
    # acks back up, and sends big messages and garbage as fast as it can.
    sock = socket.create_connection(("127.0.0.1", int(gateway.settings["ws_gateway_port"])))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    big = {f"v{i}": float(i) for i in range(200)}
    flooding = True

    async def flood() -> None:
        ws = await async_connect(url(gateway), sock=sock, max_queue=1)
        await ws.send(hello("flooder"))
        seq = 0
        with contextlib.suppress(ConnectionClosed):
            while flooding:
                await ws.send(message(seq, **big))
                await ws.send("{garbage")
                seq += 1
                await asyncio.sleep(0)
        ws.transport.abort()

    async def polite() -> list[float]:
        waits = []
        async with async_connect(url(gateway)) as ws:
            await ws.send(hello("polite"))
            await ws.recv()
            for seq in range(20):
                sent = time.monotonic()
                await ws.send(message(seq))
                assert json.loads(await asyncio.wait_for(ws.recv(), WAIT))["seq"] == seq
                waits.append(time.monotonic() - sent)
        return waits

    async def main() -> list[float]:
        nonlocal flooding
        flooder = asyncio.create_task(flood())
        await asyncio.sleep(0.5)  # the flood is on
        try:
            return await polite()
        finally:
            flooding = False
            await asyncio.wait_for(flooder, WAIT)

    waits = asyncio.run(main())
    assert len(waits) == 20 and max(waits) < 5.0  # generous: an ack per round, not a backlog
    assert len(lines(gateway, "flooder")) > 20  # it did flood


# --- inside the process: an ack follows the fsync of its line ---------------------------------


class _Store:
    def __init__(self, durable: set[int]) -> None:
        self.durable = durable
        self.seqs: list[int] = []

    def add(self, receipt, rows) -> None:
        seq = int(receipt.detail.split()[1])
        assert seq in self.durable, f"seq {seq} stored before its line was fsynced"
        self.seqs.append(seq)

    def add_many(self, items) -> None:
        for receipt, rows in items:
            self.add(receipt, rows)

    def flush(self, timeout: float = 10.0) -> bool:
        return True


def inside(tmp_path: Path, client, fail_first_syncs: int = 0,
           with_gateway: bool = False) -> tuple[object, _Store]:
    """Run `client(port, durable)` against a WsGateway in this process whose fsyncs note the
    seqs they made durable (the first `fail_first_syncs` fail with EIO instead);
    `client(port, durable, gateway)` with `with_gateway`."""
    config = load_config({}, remote_data_dir=tmp_path / "remote_data", var_dir=tmp_path / "var",
                         gateway_host="127.0.0.1", ws_gateway_port=free_port(),
                         raw_log_sync_ms=30.0)
    durable: set[int] = set()
    store = _Store(durable)
    failures = [fail_first_syncs]

    async def main() -> object:
        gateway = WsGateway(config, store, SessionKeeper(config))
        device_dir = gateway.rawlog.device_dir("dev-1")

        def sync() -> None:  # the real fsync, then note what it covered
            if failures[0]:
                failures[0] -= 1
                raise OSError(5, "Input/output error")
            gateway.rawlog.sync()
            durable.update(read_state(device_dir).seqs)

        gateway.commit = GroupCommit(sync, config.raw_log_sync_ms / 1000)
        await gateway.start()
        address = f"ws://127.0.0.1:{config.ws_gateway_port}/"
        try:
            if with_gateway:
                return await client(address, durable, gateway)
            return await client(address, durable)
        finally:
            await gateway.close()

    return asyncio.run(main()), store


async def acks_of(ws, count: int, durable: set[int]) -> list[int]:
    acks = []
    for _ in range(count):
        seq = json.loads(await asyncio.wait_for(ws.recv(), WAIT))["seq"]
        assert seq in durable, f"ack {seq} before its line was fsynced"
        acks.append(seq)
    return acks


def test_an_ack_and_the_store_follow_the_fsync_of_the_line(tmp_path):
    sent = [0, 1, 2, 2, 3, 4, 1, 5]  # resends among them

    async def client(address: str, durable: set[int]) -> list[int]:
        async with async_connect(address) as ws:
            await ws.send(hello())
            await ws.recv()
            for seq in sent:
                await ws.send(message(seq))
            return await acks_of(ws, len(sent), durable)

    acks, store = inside(tmp_path, client)
    assert acks == sent
    assert store.seqs == [0, 1, 2, 3, 4, 5]


def test_a_failed_fsync_acks_nothing_and_the_resend_is_kept(tmp_path):
    async def client(address: str, durable: set[int]) -> tuple[int | None, list[int]]:
        async with async_connect(address) as ws:
            await ws.send(hello())
            await ws.recv()
            await ws.send(message(0))
            with contextlib.suppress(ConnectionClosed):
                answer = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
                pytest.fail(f"answered {answer} after a failed fsync")
            code = ws.close_code
        async with async_connect(address) as ws:  # as a device does: resend what is unacked
            await ws.send(hello())
            await ws.recv()
            await ws.send(message(0))
            await ws.send(message(1))
            return code, await acks_of(ws, 2, durable)

    (code, acks), store = inside(tmp_path, client, fail_first_syncs=1)
    assert (code, acks) == (1011, [0, 1])
    assert store.seqs == [0, 1]
    logged = [WsLine.parse(raw).seq for raw in
              (tmp_path / "remote_data/ws/dev-1/0000.log").read_bytes().splitlines()]
    assert logged == [0, 0, 1]  # kept again: the first may never have reached the disk


def test_a_new_sequence_whose_first_line_is_forgotten_marks_the_next_line_again():
    device = _Device("dev-1", SeqState((1, 2, 3), "2026-12-06T01:00:03.000000", 1))
    later = "2026-12-06T02:00:01.000000"
    restart = Readings(1, ((later, "co2", 1.0),), 0, later)
    assert device.is_new(restart, first=True) and device.anew  # newer than all: a new sequence
    device.stored(restart)
    assert (device.anew, device.highest, device.seq_state().seqs) == (False, 1, (1,))
    device.forget({1})  # its round's fsync failed: the line may not be on disk
    assert device.anew and device.is_new(restart, first=True)  # the resend is marked again
    device.stored(restart)
    device.forget({7})  # a round of other seqs: the sequence's first line holds
    assert not device.anew


# --- the protocol document --------------------------------------------------------------------

GATEWAY_SOURCES = [Path(ws_gateway.__file__), Path(ws_format.__file__)]
PROTOCOL_DOC = Path(__file__).parents[1] / "docs" / "websocket.md"
ERROR_CALLS = {"MessageError", "refuse", "error"}  # error code first: MessageError(code, ...)
ERROR_CODE = re.compile(r"[A-Z][A-Z_]+")  # (log.error's first argument is a text)


def _called(node: ast.Call) -> str:
    func = node.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")


def gateway_codes() -> tuple[set[str], set[int]]:
    """The error codes the gateway's code sends, and the close codes it names (any integer
    literal in the WebSocket close code ranges: a call's argument, a constant, a comparison)."""
    errors: set[str] = set()
    closes: set[int] = set()
    for path in GATEWAY_SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and _called(node) in ERROR_CALLS and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and ERROR_CODE.fullmatch(str(first.value)):
                    errors.add(first.value)
            if (isinstance(node, ast.Constant) and type(node.value) is int
                    and (1000 <= node.value <= 1015 or 4000 <= node.value <= 4999)):
                closes.add(node.value)
    return errors, closes


def test_the_protocol_document_lists_every_error_and_close_code():
    errors, closes = gateway_codes()
    assert {"BAD_JSON", "OUT_OF_ORDER", "BAD_TOKEN", "HELLO_TIMEOUT"} <= errors  # found at all
    assert {1001, 1008, 1009, 1011, 4401, 4409} <= closes
    text = PROTOCOL_DOC.read_text()
    table_codes = set(re.findall(r"^\| `([A-Z_]+)` \|", text, re.MULTILINE))
    table_closes = {int(c) for c in re.findall(r"^\| (\d{4}) \|", text, re.MULTILINE)}
    assert errors <= table_codes, f"not in {PROTOCOL_DOC.name}'s error table"
    assert closes <= table_closes, f"not in {PROTOCOL_DOC.name}'s close code table"


def disk_full(gateway: WsGateway, full: bool) -> None:
    """Put the gateway's disk below its floor, or above (its next look sees it at once)."""
    gateway.headroom.min_free_bytes = 1 << 62 if full else 0
    gateway.headroom._checked_at = float("-inf")


async def closing_of(ws) -> tuple[int | None, str | None]:
    """Wait for the gateway's close; nothing but the close may come first."""
    with contextlib.suppress(ConnectionClosed):
        answer = await asyncio.wait_for(ws.recv(), WAIT)
        pytest.fail(f"answered {answer} after STORAGE_FULL")
    return ws.close_code, ws.close_reason


def test_a_full_disk_refuses_with_storage_full_and_1013_and_loses_nothing_acked(tmp_path,
                                                                                caplog):
    async def client(address: str, durable: set[int], gateway: WsGateway) -> dict:
        seen: dict = {}
        async with async_connect(address) as ws:
            await ws.send(hello())
            await ws.recv()
            for seq in (1, 2):
                await ws.send(message(seq))
            acks = await acks_of(ws, 2, durable)
            disk_full(gateway, True)
            for seq in (3, 4):
                await ws.send(message(seq))
            seen["error"] = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            seen["close"] = await closing_of(ws)
        async with async_connect(address) as ws:  # too soon: the hello is refused alike
            await ws.send(hello())
            seen["hello error"] = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            seen["hello close"] = await closing_of(ws)
        disk_full(gateway, False)
        async with async_connect(address) as ws:  # room again: 3 and 4 resent, as kept
            await ws.send(hello())
            await ws.recv()
            for seq in (3, 4):
                await ws.send(message(seq))
            seen["acks"] = acks + await acks_of(ws, 2, durable)
        return seen

    caplog.set_level(logging.INFO)
    seen, store = inside(tmp_path, client, with_gateway=True)
    reason = "storage full; retry after 60 s"  # ws_full_retry_seconds' default
    assert seen["close"] == seen["hello close"] == (1013, reason)
    for error in (seen["error"], seen["hello error"]):
        assert error["type"] == "error" and error["error"] == "STORAGE_FULL"
        assert retry_after(error["message"]) == 60.0
    assert seen["acks"] == store.seqs == [1, 2, 3, 4]
    logged = [WsLine.parse(raw).seq for raw in
              (tmp_path / "remote_data/ws/dev-1/0000.log").read_bytes().splitlines()]
    assert logged == [1, 2, 3, 4]  # nothing of 3 and 4 while the disk was full
    states = [r.getMessage() for r in caplog.records if "ws gateway: storage" in r.getMessage()]
    assert [m.split(":")[1] for m in states] == [" storage full", " storage recovered"]
    assert not [r for r in caplog.records if r.exc_info]


def test_the_retry_rule_waits_at_least_the_seconds_given_plus_up_to_half():
    rng = random.Random(7)
    waits = [retry_wait(retry_after(retry_reason(2.5)), rng) for _ in range(1000)]
    assert min(waits) >= 2.5 and max(waits) <= 3.75 and max(waits) - min(waits) > 1.0
