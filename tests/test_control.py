"""The gateway process's control socket (gateways/control.py): a real server in a loop thread."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from co2unit_server.gateways.control import ControlServer, GatewayUnavailable, call


async def echo(request: dict) -> dict:
    return {"echo": request}


async def refuse(request: dict) -> dict:
    raise ValueError("no session is running")


async def broken(request: dict) -> dict:
    raise RuntimeError("a bug")


@pytest.fixture
def control(tmp_path: Path) -> Iterator[Path]:
    """A ControlServer with echo, refuse and broken handlers in a loop of its own thread."""
    # A short path: AF_UNIX paths are limited to about 100 bytes.
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"ctl-{os.getpid()}-{id(tmp_path)}.sock"
    loop = asyncio.new_event_loop()
    server = ControlServer(path, {"echo": echo, "refuse": refuse, "broken": broken})
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield path
    asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_a_handler_answers(control):
    assert call(control, "echo", name="drill-3") == {
        "ok": True, "echo": {"command": "echo", "name": "drill-3"}}


def test_the_socket_is_the_owners_only(control):
    assert stat.S_IMODE(control.stat().st_mode) == 0o600


def test_an_unknown_command(control):
    answer = call(control, "nope")
    assert answer["ok"] is False
    assert "unknown command" in answer["error"] and "echo" in answer["error"]


def test_a_value_error_is_a_refusal(control):
    assert call(control, "refuse") == {"ok": False, "error": "no session is running"}


def test_a_bug_in_a_handler_is_an_internal_error(control):
    answer = call(control, "broken")
    assert answer["ok"] is False and "internal error" in answer["error"]
    assert call(control, "echo")["ok"]  # the server goes on


def test_a_request_that_is_not_json(control):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(control))
        s.sendall(b"hello\n")
        assert b'"ok": false' in s.recv(65536)


def test_no_gateway_at_the_socket(tmp_path):
    with pytest.raises(GatewayUnavailable, match="no gateway process"):
        call(tmp_path / "gateways.sock", "status")


def test_a_socket_nobody_listens_on(tmp_path):
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"dead-{os.getpid()}.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))  # bound, never listening: connection refused
    try:
        with pytest.raises(GatewayUnavailable):
            call(path, "status")
    finally:
        path.unlink()


def test_a_stale_socket_file_is_replaced(tmp_path):
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"stale-{os.getpid()}.sock"
    path.write_text("left by a killed process")

    async def serve_one() -> dict:
        server = ControlServer(path, {"echo": echo})
        await server.start()
        try:
            return await asyncio.to_thread(call, path, "echo")
        finally:
            await server.close()

    assert asyncio.run(serve_one())["ok"]
    assert not path.exists()
