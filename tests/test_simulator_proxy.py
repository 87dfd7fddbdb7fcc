"""The fault proxy: transparent without faults, reproducible faults, drops, stalls, bandwidth."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from co2unit_server.simulator.proxy import FAULT_KINDS, FaultProxy, message_length, plan_fault
from co2unit_server.simulator.unitclient import ProtocolError, request

BODY = bytes(range(256)) * 16  # 4096 bytes


class EchoHandler(socketserver.BaseRequestHandler):
    """Reads one request (by Content-Length) and answers its body back, HTTP/1.0 style."""

    def handle(self) -> None:
        self.request.settimeout(5)
        data = b""
        try:
            while b"\r\n\r\n" not in data or len(data) < message_length(data.split(
                    b"\r\n\r\n")[0] + b"\r\n\r\n"):
                chunk = self.request.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        self.server.received.append(data)
        body = data.partition(b"\r\n\r\n")[2]
        with contextlib.suppress(OSError):
            self.request.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
                                 + body)


@pytest.fixture
def echo() -> Iterator[socketserver.ThreadingTCPServer]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), EchoHandler)
    server.daemon_threads = True
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def proxy_to(server, **kwargs) -> FaultProxy:
    return FaultProxy(server.server_address, **kwargs)


def test_fault_plans_are_reproducible_and_follow_the_rate():
    keys = [b"PUT /ou/x/push-sequential/errors/e?offset=%d HTTP/1.0#1" % i for i in range(2000)]
    plans = [plan_fault(7, 0.3, k) for k in keys]
    assert plans == [plan_fault(7, 0.3, k) for k in keys]
    assert plans != [plan_fault(8, 0.3, k) for k in keys]
    assert 500 < sum(p is not None for p in plans) < 700
    assert {p.kind for p in plans if p} == set(FAULT_KINDS)
    assert all(plan_fault(7, 0.0, k) is None for k in keys[:100])
    assert all(plan_fault(7, 1.0, k) for k in keys[:100])


def test_without_faults_the_proxy_is_transparent(echo):
    with proxy_to(echo) as proxy:
        reply = request(proxy.host, proxy.port, "PUT", "/x?offset=0", BODY, timeout=5)
    assert reply.status == 200 and reply.body == BODY
    assert echo.received[0].endswith(b"\r\n\r\n" + BODY)
    assert proxy.stats.connections == 1 and proxy.stats.faults_injected == 0


@pytest.mark.parametrize("kind", ["drop_request", "drop_reply"])
def test_a_drop_resets_the_connection_mid_message(echo, kind):
    with proxy_to(echo, rate=1.0, kinds=(kind,)) as proxy, \
            pytest.raises((OSError, ProtocolError)):
        request(proxy.host, proxy.port, "PUT", "/x?offset=0", BODY, timeout=5)
    assert proxy.stats.faults[kind] == 1
    if kind == "drop_request":
        deadline = time.monotonic() + 10  # the echo thread records what reached it
        while not echo.received and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(echo.received) == 1
        assert not echo.received[0].endswith(BODY)  # the message was cut before its end


@pytest.mark.parametrize("kind", ["stall_request", "stall_reply"])
def test_a_stall_outlasts_the_client_timeout(echo, kind):
    with proxy_to(echo, rate=1.0, kinds=(kind,), stall_s=1) as proxy:
        with pytest.raises(socket.timeout):
            request(proxy.host, proxy.port, "PUT", "/x?offset=0", BODY, timeout=0.3)
        assert proxy.wait_idle(timeout=10)
    assert proxy.stats.faults[kind] == 1
    # Either way the server got the whole request: a stalled one arrives after the unit left.
    assert len(echo.received) == 1 and echo.received[0].endswith(BODY)


def test_the_same_request_meets_the_same_faults_again(echo):
    outcomes = []
    for _ in range(2):
        with proxy_to(echo, rate=0.5, seed=3, stall_s=0.5) as proxy:
            for i in range(12):
                try:
                    request(proxy.host, proxy.port, "PUT", f"/x?offset={i}", BODY, timeout=0.2)
                    outcomes.append("ok")
                except (OSError, ProtocolError):
                    outcomes.append("fault")
    assert outcomes[:12] == outcomes[12:] and "ok" in outcomes and "fault" in outcomes


def test_bandwidth_limit_paces_both_directions(echo):
    with proxy_to(echo, kbps=8) as proxy:
        started = time.monotonic()
        reply = request(proxy.host, proxy.port, "PUT", "/x?offset=0", BODY, timeout=5)
        elapsed = time.monotonic() - started
    assert reply.body == BODY
    # 4096 bytes each way at 8000 bytes/s: at least one second in all.
    assert 1.0 <= elapsed < 4.0


def test_a_dead_server_looks_like_a_reset_link():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()
    with FaultProxy(dead) as proxy, pytest.raises((OSError, ProtocolError)):
        request(proxy.host, proxy.port, "POST", "/ou/x/alive", timeout=5)
