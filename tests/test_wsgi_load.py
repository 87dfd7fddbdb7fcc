"""A fleet on slow links against the real uWSGI server: stalls must not freeze the others.

These check a property, not speed: with the reference setup (2 blocking workers, listen 100) a
ping waits up to 30 s behind two stalled uploads, and a burst of 500 connections sees SYN-retry
delays of 1 s and more. Loopback only, bounded in count and time.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time

from co2unit_server.simulator.unitclient import build_request, parse_reply

from conftest import HW_ID

BODY = 4096
TRICKLE_BYTES_PER_S = 2048
TRICKLE_PIECE = 256


def unit_id(i: int) -> str:
    return f"co2unit-{i:012x}"


def head_of_put(server, hw_id: str, length: int) -> bytes:
    path = f"/ou/{hw_id}/push-sequential/data/readings/readings-0000.tsv?offset=0"
    return (f"PUT {path} HTTP/1.0\r\nHost: {server.host}\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def trickle_upload(server, hw_id: str, body: bytes, results: dict) -> None:
    """Send a PUT body at 2 kB/s, as over CAT-M1, and record the reply's status."""
    with socket.create_connection((server.host, server.port), timeout=60) as sock:
        sock.sendall(head_of_put(server, hw_id, len(body)))
        for start in range(0, len(body), TRICKLE_PIECE):
            sock.sendall(body[start:start + TRICKLE_PIECE])
            time.sleep(TRICKLE_PIECE / TRICKLE_BYTES_PER_S)
        reply = parse_reply(b"".join(iter(lambda: sock.recv(65536), b"")))
    results[hw_id] = reply.status


def test_ping_is_answered_promptly_while_uploads_trickle_and_stall(uwsgi_server):
    server = uwsgi_server
    stalled = []
    for i in range(2):  # headers and part of the body, then silence
        sock = socket.create_connection((server.host, server.port))
        sock.sendall(head_of_put(server, unit_id(1000 + i), BODY) + b"x" * 1000)
        stalled.append(sock)
    results: dict[str, int] = {}
    bodies = {unit_id(i): bytes([i]) * BODY for i in range(50)}
    threads = [threading.Thread(target=trickle_upload, args=(server, hw, body, results))
               for hw, body in bodies.items()]
    try:
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # every trickling upload is now mid-body
        ping_times = []
        for _ in range(3):
            started = time.monotonic()
            reply = server.request("POST", f"/ou/{HW_ID}/alive?site_code=x", timeout=30)
            ping_times.append(time.monotonic() - started)
            assert reply.status == 200
        uploads_running = sum(thread.is_alive() for thread in threads)
        for thread in threads:
            thread.join(timeout=60)
    finally:
        for sock in stalled:
            sock.close()
    assert uploads_running >= 40, "the uploads finished before the pings: no contention tested"
    assert max(ping_times) < 1.0, f"ping took {max(ping_times):.2f}s behind slow uploads"
    assert results == {hw: 200 for hw in bodies}
    for hw, body in bodies.items():
        stored = server.remote_data / hw / "data" / "readings" / "readings-0000.tsv"
        assert stored.read_bytes() == body


def burst_of_pings(server, count: int) -> tuple[list[float], list[int]]:
    """Open `count` connections at once; return connect times and reply statuses."""
    sel = selectors.DefaultSelector()
    started = time.monotonic()
    connect_times: list[float] = []
    statuses: list[int] = []
    for i in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex((server.host, server.port))
        request = build_request("POST", f"/ou/{unit_id(i)}/alive?site_code=burst", server.host)
        sel.register(sock, selectors.EVENT_WRITE, {"request": request, "reply": b""})
    deadline = started + 60
    while sel.get_map() and time.monotonic() < deadline:
        for key, events in sel.select(timeout=1):
            sock, state = key.fileobj, key.data
            if events & selectors.EVENT_WRITE:
                connect_times.append(time.monotonic() - started)
                sock.sendall(state["request"])
                sel.modify(sock, selectors.EVENT_READ, state)
                continue
            chunk = sock.recv(65536)
            if chunk:
                state["reply"] += chunk
                continue
            statuses.append(parse_reply(state["reply"]).status)
            sel.unregister(sock)
            sock.close()
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    return connect_times, statuses


def test_500_connections_at_once_complete_without_syn_retries(uwsgi_server):
    connect_times, statuses = burst_of_pings(uwsgi_server, 500)
    assert statuses == [200] * 500
    # A dropped SYN is retried after 1 s at the earliest.
    assert max(connect_times) < 1.0, f"slowest connect {max(connect_times):.2f}s"
    lines = (uwsgi_server.var_dir / "pings" / "pings-0000.tsv").read_text().splitlines()
    assert len(lines) == 500
