"""An oversized body gets its JSON 413 read by the client, not a connection reset."""

from __future__ import annotations

import io
import selectors
import socket
import time

from co2unit_server.serve import read_uwsgi_section
from co2unit_server.server import resources
from co2unit_server.simulator.unitclient import parse_reply

from conftest import HW_ID, INI

MB = 1024 * 1024
URL = f"/ou/{HW_ID}/push-sequential/data/readings/readings-0000.tsv?offset=0"


def put_while_reading(host: str, port: int, size: int,
                      timeout: float = 60) -> tuple[bytes, str | None]:
    """Send a PUT of `size` bytes, reading whatever comes back meanwhile, as a browser does.

    Returns what was received and the error that ended the exchange (None: a clean close).
    """
    head = (f"PUT {URL} HTTP/1.0\r\nHost: {host}\r\nContent-Length: {size}\r\n\r\n").encode()
    outgoing = memoryview(head + b"x" * size)
    received = bytearray()
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as sock, \
            selectors.DefaultSelector() as sel:
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        try:
            while time.monotonic() < deadline:
                for _, events in sel.select(timeout=1):
                    if events & selectors.EVENT_READ:
                        chunk = sock.recv(65536)
                        if not chunk:
                            return bytes(received), None
                        received += chunk
                    if events & selectors.EVENT_WRITE and outgoing:
                        outgoing = outgoing[sock.send(outgoing[:256 * 1024]):]
                        if not outgoing:
                            sel.modify(sock, selectors.EVENT_READ)
        except OSError as exc:
            return bytes(received), type(exc).__name__
    raise TimeoutError(f"no reply within {timeout}s")


def put_then_read(host: str, port: int, size: int) -> bytes:
    """Send the whole PUT first, then read the reply until the server closes (as a unit does)."""
    head = (f"PUT {URL} HTTP/1.0\r\nHost: {host}\r\nContent-Length: {size}\r\n\r\n").encode()
    with socket.create_connection((host, port), timeout=60) as sock:
        sock.sendall(head + b"x" * size)
        return b"".join(iter(lambda: sock.recv(65536), b""))


def assert_413(raw: bytes, size: int) -> None:
    reply = parse_reply(raw)
    assert reply.status == 413, raw[:200]
    assert reply.json()["error"] == "BODY_TOO_LARGE" and str(size) in reply.json()["message"]


def test_uwsgi_limit_post_does_not_cut_in_before_the_drain():
    limit_post = int(dict(read_uwsgi_section(INI))["limit-post"])
    assert limit_post > resources.DRAIN_MAX_BYTES


def test_a_2_mb_body_gets_the_413_over_a_raw_socket(uwsgi_server):
    host, port = uwsgi_server.host, uwsgi_server.port
    assert_413(put_then_read(host, port, 2 * MB), 2 * MB)
    raw, error = put_while_reading(host, port, 2 * MB)
    assert error is None
    assert_413(raw, 2 * MB)
    assert not (uwsgi_server.remote_data / HW_ID / "data").exists()
    assert uwsgi_server.request("POST", f"/ou/{HW_ID}/alive?site_code=x").status == 200


def test_a_20_mb_body_beyond_the_drain_bound(uwsgi_server):
    # 16 MB are drained, then the 413 goes out while 4 MB are still coming: a client that
    # reads while it sends mostly receives the 413 and then a reset for the bytes nobody read
    # (18 of 20 tries on loopback); otherwise the reset wins and throws the 413 away. One that
    # reads only after sending everything gets only the reset.
    outcomes = []
    for _ in range(5):
        raw, error = put_while_reading(uwsgi_server.host, uwsgi_server.port, 20 * MB)
        assert error in (None, "ConnectionResetError", "BrokenPipeError")
        outcomes.append(raw)
        if raw:
            assert_413(raw, 20 * MB)
            break
    assert any(outcomes), "every try ended in a reset before the 413"
    assert "16777216 of 20971520 bytes drained" in uwsgi_server.log_path.read_text()
    assert uwsgi_server.request("POST", f"/ou/{HW_ID}/alive?site_code=x").status == 200


class CountingStream(io.RawIOBase):
    """A request body of `size` bytes that counts what is read and can be slow."""

    def __init__(self, size: int, delay_s: float = 0.0) -> None:
        self.remaining, self.read_bytes, self.delay_s = size, 0, delay_s

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        time.sleep(self.delay_s)
        n = min(len(buffer), self.remaining)
        buffer[:n] = b"x" * n
        self.remaining -= n
        self.read_bytes += n
        return n


def test_the_drain_stops_at_its_size_bound(client, monkeypatch):
    monkeypatch.setattr(resources, "DRAIN_MAX_BYTES", 300_000)
    body = CountingStream(1_000_000)
    resp = client.put(URL, environ_overrides={"wsgi.input": body, "CONTENT_LENGTH": "1000000"})
    assert resp.status_code == 413 and resp.get_json()["error"] == "BODY_TOO_LARGE"
    assert body.read_bytes == 300_000


def test_the_drain_stops_at_its_time_bound(client, monkeypatch):
    monkeypatch.setattr(resources, "DRAIN_MAX_S", 0.2)
    body = CountingStream(100 * MB, delay_s=0.05)
    started = time.monotonic()
    resp = client.put(URL, environ_overrides={"wsgi.input": body,
                                              "CONTENT_LENGTH": str(100 * MB)})
    assert resp.status_code == 413
    # Reading all 100 MB at this pace would take over a minute.
    assert time.monotonic() - started < 5 and body.read_bytes < 100 * MB
