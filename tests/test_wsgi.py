"""The real server under uWSGI, spoken to over raw sockets in HTTP/1.0 exactly as a unit does."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from co2unit_server.simulator.unitclient import build_request, parse_reply, request

from conftest import HW_ID, OTHER_HW_ID, ServerProcess

CHUNK = 4096
READINGS = "data/readings"


def push_url(name: str, offset: int, hw_id: str = HW_ID, directory: str = READINGS) -> str:
    return f"/ou/{hw_id}/push-sequential/{directory}/{name}?offset={offset}"


def push_whole_file(server: ServerProcess, directory: str, name: str, data: bytes,
                    hw_id: str = HW_ID) -> list:
    """Push a file in 4096-byte chunks from offset 0; return every ack."""
    acks = []
    for offset in range(0, len(data), CHUNK):
        reply = server.request("PUT", push_url(name, offset, hw_id, directory),
                               data[offset:offset + CHUNK])
        assert reply.status == 200, reply.body
        acks.append(reply.json()["ack_file"])
    return acks


def readings_file(n_lines: int, seed: int) -> bytes:
    return "".join(
        f"{HW_ID}\tvaranger-03\t2019-07-{1 + i // 48:02d}\t{i % 24:02d}:{i % 60:02d}:10\t"
        f"{20 + (i * seed) % 7}.4375\t{i % 3}\t" + "\t".join(str(680 + (i + k) % 40)
                                                       for k in range(10)) + "\n"
        for i in range(n_lines)
    ).encode()


def server_file(server: ServerProcess, *parts: str, hw_id: str = HW_ID) -> Path:
    return server.remote_data.joinpath(hw_id, *parts)


def test_full_unit_cycle_ends_byte_identical(uwsgi_server):
    server = uwsgi_server
    update = server.remote_data / HW_ID / "updates" / "update-2020-01-14a"
    (update / "conf-patch").mkdir(parents=True)
    (update / "flash" / "lib").mkdir(parents=True)
    (update / "conf-patch" / "ou-id.json").write_bytes(b'{"site_code": "varanger-03"}')
    module = os.urandom(10_000)
    (update / "flash" / "lib" / "fileutil.mpy").write_bytes(module)

    reply = server.request("POST", f"/ou/{HW_ID}/alive?site_code=None&rssi_raw=12"
                                   "&rssi_dbm=-89&ber_raw=99")
    assert (reply.status, reply.json()) == (200, {})

    listing = server.request("GET", f"/ou/{HW_ID}/updates?recursive=False")
    assert (listing.status, listing.json()) == (200, ["update-2020-01-14a"])
    files = server.request("GET", f"/ou/{HW_ID}/updates/update-2020-01-14a?recursive=True")
    assert files.json() == ["conf-patch/ou-id.json", "flash/lib/fileutil.mpy"]
    download = server.request("GET", f"/ou/{HW_ID}/updates/update-2020-01-14a/"
                                     "flash/lib/fileutil.mpy")
    assert download.status == 200 and download.body == module

    errors = b"----- 2019-09-16 10:55:57 INFO  transmitting\n" * 200
    readings = [readings_file(700, 1), readings_file(300, 2)]
    assert push_whole_file(server, "errors", "errors-0000.txt", errors)[-1] == [
        "errors-0000.txt", len(errors), len(errors)]
    for i, data in enumerate(readings):
        acks = push_whole_file(server, READINGS, f"readings-{i:04d}.tsv", data)
        assert acks[-1] == [f"readings-{i:04d}.tsv", len(data), len(data)]

    assert server_file(server, "errors", "errors-0000.txt").read_bytes() == errors
    for i, data in enumerate(readings):
        assert server_file(server, "data", "readings", f"readings-{i:04d}.tsv").read_bytes() == data
    ping_line = (server.var_dir / "pings" / "pings-0000.tsv").read_text().rstrip("\n")
    assert ping_line.split("\t")[1:] == [HW_ID, "None", "12", "-89", "99"]


def test_pings_reach_the_database_from_every_worker(uwsgi_server):
    # Each forked worker starts its own table writer; concurrent pings land in both.
    def ping(i: int) -> int:
        hw_id = f"co2unit-{i:012x}"
        return uwsgi_server.request("POST", f"/ou/{hw_id}/alive?site_code=s{i}").status

    threads = [threading.Thread(target=ping, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    db_path = uwsgi_server.var_dir / "db.sqlite3"
    deadline = time.monotonic() + 10
    count = 0
    while time.monotonic() < deadline:
        # The writers create the tables with their first batch: until then there is none.
        with contextlib.suppress(sqlite3.OperationalError), \
                contextlib.closing(sqlite3.connect(db_path)) as conn:
            count = conn.execute("SELECT count(DISTINCT unit_id) FROM pings").fetchone()[0]
        if count == 40:
            break
        time.sleep(0.1)
    assert count == 40


def test_resume_after_a_lost_reply_resends_the_same_chunk(uwsgi_server):
    data = readings_file(100, 3)
    first = uwsgi_server.request("PUT", push_url("readings-0000.tsv", 0), data[:CHUNK])
    again = uwsgi_server.request("PUT", push_url("readings-0000.tsv", 0), data[:CHUNK])
    assert first.json() == again.json() == {"ack_file": ["readings-0000.tsv", CHUNK, CHUNK]}
    push_whole_file(uwsgi_server, READINGS, "readings-0000.tsv", data)
    assert server_file(uwsgi_server, "data", "readings", "readings-0000.tsv").read_bytes() == data


def test_unit_with_lost_state_is_told_to_jump(uwsgi_server):
    old, current = readings_file(200, 4), readings_file(50, 5)
    push_whole_file(uwsgi_server, READINGS, "readings-0000.tsv", old)
    push_whole_file(uwsgi_server, READINGS, "readings-0001.tsv", current)
    reply = uwsgi_server.request("PUT", push_url("readings-0000.tsv", 0), old[:CHUNK])
    assert reply.status == 200
    assert reply.json()["ack_file"] == ["readings-0001.tsv", len(current), len(current)]


def test_offset_past_end_is_416_and_never_zero_filled(uwsgi_server):
    data = readings_file(10, 6)
    push_whole_file(uwsgi_server, READINGS, "readings-0000.tsv", data)
    for offset in (len(data) + 1, len(data) + CHUNK):
        reply = uwsgi_server.request("PUT", push_url("readings-0000.tsv", offset), b"x" * 10)
        assert reply.status == 416
        assert reply.json() == {
            "error": "SKIPPED_PART_OF_FILE", "ack_file": ["readings-0000.tsv", len(data),
                                                          len(data)],
            "message": reply.json()["message"]}
    stored = server_file(uwsgi_server, "data", "readings", "readings-0000.tsv").read_bytes()
    assert stored == data and b"\x00" not in stored


def _push_in_child(port: int, data: bytes) -> None:
    for offset in range(0, len(data), 1024):
        reply = request("127.0.0.1", port, "PUT", push_url("readings-0000.tsv", offset),
                        data[offset:offset + 1024])
        assert reply.status in (200, 416), reply.body
    os._exit(0)


def test_two_processes_pushing_the_same_file_at_once(uwsgi_server):
    data = readings_file(400, 7)
    pids = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                _push_in_child(uwsgi_server.port, data)
            finally:
                os._exit(1)
        pids.append(pid)
    statuses = [os.waitpid(pid, 0)[1] for pid in pids]
    assert statuses == [0, 0]
    assert server_file(uwsgi_server, "data", "readings", "readings-0000.tsv").read_bytes() == data
    assert not server_file(uwsgi_server, "superseded").exists()


def test_kill_9_mid_push_keeps_every_acknowledged_byte(uwsgi_server):
    data = os.urandom(CHUNK * 400)
    acked = {"size": 0}
    stop = threading.Event()

    def pusher() -> None:
        offset = 0
        while offset < len(data) and not stop.is_set():
            try:
                reply = uwsgi_server.request("PUT", push_url("readings-0000.tsv", offset),
                                             data[offset:offset + CHUNK], timeout=5)
            except OSError:
                return
            if reply.status != 200:
                return
            offset = acked["size"] = reply.json()["ack_file"][1]

    thread = threading.Thread(target=pusher)
    thread.start()
    deadline = time.monotonic() + 30
    while acked["size"] < CHUNK * 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    uwsgi_server.kill(signal.SIGKILL)
    stop.set()
    thread.join(timeout=30)
    before_restart = acked["size"]
    assert before_restart >= CHUNK * 20
    uwsgi_server.start()
    stored = server_file(uwsgi_server, "data", "readings", "readings-0000.tsv").read_bytes()
    assert len(stored) >= before_restart
    assert stored == data[:len(stored)]
    # The unit resumes from the server's position and finishes.
    reply = uwsgi_server.request("PUT", push_url("readings-0000.tsv", len(stored)),
                                 data[len(stored):len(stored) + CHUNK])
    assert reply.status == 200


TRAVERSALS = [
    ("POST", "/ou/../alive", None),
    ("POST", "/ou/co2unit-XYZ/alive", None),
    ("POST", f"/ou/{HW_ID}/../../alive", None),
    ("PUT", f"/ou/{HW_ID}/push-sequential/data/../../../escaped.txt?offset=0", b"x"),
    ("PUT", f"/ou/{HW_ID}/push-sequential/data/%2e%2e/%2e%2e/%2e%2e/escaped.txt?offset=0", b"x"),
    ("PUT", f"/ou/{HW_ID}/push-sequential//tmp/escaped.txt?offset=0", b"x"),
    ("PUT", f"/ou/{HW_ID}/push-sequential/data/..%2f..%2f..%2fescaped.txt?offset=0", b"x"),
    ("PUT", "/ou/..%2f..%2fvar/push-sequential/data/escaped.txt?offset=0", b"x"),
    ("PUT", f"/ou/{HW_ID}/push-sequential/updates/update-evil/flash/main.py?offset=0", b"x"),
    ("GET", f"/ou/{HW_ID}/updates/../../../var/db.sqlite3", None),
    ("GET", f"/ou/{HW_ID}/updates/%2e%2e/data/readings?recursive=True", None),
    ("GET", f"/ou/{HW_ID}/updates//etc/passwd", None),
    ("GET", "/ou/../updates?recursive=True", None),
    ("GET", "/status/alive/..%2f..%2fvar%2fdb.sqlite3", None),
    ("GET", "/data/co2/%2e%2e", None),
    ("GET", "/data/co2/../../var/pings/pings-0000.tsv", None),
]


def test_path_traversal_is_refused_on_every_endpoint(uwsgi_server, tmp_path):
    (uwsgi_server.remote_data / HW_ID / "updates" / "update-1").mkdir(parents=True)
    (uwsgi_server.remote_data / HW_ID / "updates" / "update-1" / "main.py").write_text("ok")
    uwsgi_server.request("POST", f"/ou/{HW_ID}/alive?site_code=x")
    before = sorted(p for p in tmp_path.rglob("*") if not p.is_relative_to(uwsgi_server.var_dir))
    for method, path, body in TRAVERSALS:
        reply = uwsgi_server.request(method, path, body)
        assert reply.status in (400, 403, 404), (path, reply.status)
        if reply.headers["content-type"].startswith("application/json"):
            assert reply.json()["error"], path
        assert b"root:" not in reply.body and b"SQLite" not in reply.body
    after = sorted(p for p in tmp_path.rglob("*") if not p.is_relative_to(uwsgi_server.var_dir))
    assert after == before
    assert not list(Path("/tmp").glob("escaped.txt"))


def test_push_into_updates_is_refused(uwsgi_server):
    reply = uwsgi_server.request("PUT", push_url("main.py", 0, directory="updates/update-x/flash"),
                                 b"import evil")
    assert reply.status == 403 and reply.json()["error"] == "FORBIDDEN_DIR"
    assert not server_file(uwsgi_server, "updates").exists()


def test_oversized_body_is_413(uwsgi_server):
    reply = uwsgi_server.request("PUT", push_url("readings-0000.tsv", 0), b"x" * (64 * 1024 + 1))
    assert reply.status == 413 and reply.json()["error"] == "BODY_TOO_LARGE"
    assert not server_file(uwsgi_server, "data").exists()


def test_put_without_content_length_is_411(uwsgi_server):
    raw = (f"PUT {push_url('readings-0000.tsv', 0)} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
           "some bytes").encode()
    reply = parse_reply(raw_exchange(uwsgi_server, raw))
    assert reply.status == 411
    assert not server_file(uwsgi_server, "data").exists()


def raw_exchange(server: ServerProcess, raw: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection((server.host, server.port), timeout=timeout) as sock:
        sock.sendall(raw)
        return b"".join(iter(lambda: sock.recv(65536), b""))


def test_body_cut_short_by_a_dropped_connection_is_not_written(uwsgi_server):
    head = (f"PUT {push_url('readings-0000.tsv', 0)} HTTP/1.0\r\nHost: 127.0.0.1\r\n"
            f"Content-Length: {CHUNK}\r\n\r\n").encode()
    with socket.create_connection((uwsgi_server.host, uwsgi_server.port)) as sock:
        sock.sendall(head + b"x" * 1000)
    deadline = time.monotonic() + 15
    while "cut short" not in uwsgi_server.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "cut short" in uwsgi_server.log_path.read_text()
    assert not server_file(uwsgi_server, "data", "readings", "readings-0000.tsv").exists()


def test_a_stalled_body_is_given_up_after_the_socket_timeout(server_factory):
    server = server_factory(uwsgi_options=("socket-timeout=2", "http-timeout=2"))
    head = (f"PUT {push_url('readings-0000.tsv', 0)} HTTP/1.0\r\nHost: 127.0.0.1\r\n"
            f"Content-Length: {CHUNK}\r\n\r\n").encode()
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(head + b"x" * 1000)  # then silence, connection kept open
        started = time.monotonic()
        leftover = b"".join(iter(lambda: sock.recv(65536), b""))  # the server closes
        waited = time.monotonic() - started
    assert waited < 10, f"the server held a stalled upload for {waited:.1f}s"
    assert not leftover.startswith(b"HTTP/1.0 200")
    assert not server_file(server, "data", "readings", "readings-0000.tsv").exists()
    assert server.request("POST", f"/ou/{HW_ID}/alive?site_code=x").status == 200


def test_low_disk_space_is_507_and_writes_nothing(server_factory):
    server = server_factory(env={"CO2UNIT_MIN_FREE_BYTES": str(1 << 62)})
    reply = server.request("PUT", push_url("readings-0000.tsv", 0), b"data")
    assert reply.status == 507 and reply.json()["error"] == "INSUFFICIENT_STORAGE"
    assert not server_file(server, "data", "readings", "readings-0000.tsv").exists()
    assert server.request("POST", f"/ou/{HW_ID}/alive?site_code=x").status == 200


def test_responses_have_content_length_are_not_chunked_and_close(uwsgi_server):
    update = uwsgi_server.remote_data / HW_ID / "updates" / "update-1"
    update.mkdir(parents=True)
    (update / "main.py").write_bytes(b"print('hi')\n" * 1000)
    requests = [
        ("POST", f"/ou/{HW_ID}/alive?site_code=x", None),
        ("GET", f"/ou/{HW_ID}/updates?recursive=False", None),
        ("GET", f"/ou/{HW_ID}/updates/update-1?recursive=True", None),
        ("GET", f"/ou/{HW_ID}/updates/update-1/main.py", None),
        ("GET", f"/ou/{OTHER_HW_ID}/updates?recursive=False", None),
        ("PUT", push_url("readings-0000.tsv", 0), b"abc"),
        ("PUT", push_url("readings-0000.tsv", 9), b"abc"),
        ("PUT", push_url("x", 0, directory="updates"), b"abc"),
        ("GET", "/", None),
        ("GET", "/status/alive/recent", None),
        ("GET", "/status/alive/summary", None),
        ("GET", "/nowhere", None),
    ]
    for method, path, body in requests:
        started = time.monotonic()
        reply = request(uwsgi_server.host, uwsgi_server.port, method, path, body, timeout=10)
        assert time.monotonic() - started < 5, f"{path}: connection not closed after reply"
        assert reply.raw_head.startswith(b"HTTP/1.0 "), path
        assert "transfer-encoding" not in reply.headers, path
        assert "location" not in reply.headers, path
        assert int(reply.headers["content-length"]) == len(reply.body), path
        # Header lines end in CRLF: no bare LF anywhere in the head.
        assert b"\n" not in reply.raw_head.replace(b"\r\n", b""), path


def test_unit_request_bytes_are_what_the_firmware_sends():
    assert build_request("POST", f"/ou/{HW_ID}/alive?site_code=x", "example.org") == (
        f"POST /ou/{HW_ID}/alive?site_code=x HTTP/1.0\r\nHost: example.org\r\n\r\n".encode())
    assert build_request("PUT", "/p?offset=0", "h", b"ab") == (
        b"PUT /p?offset=0 HTTP/1.0\r\nHost: h\r\nContent-Length: 2\r\n\r\nab")


@pytest.mark.parametrize("path", ["/ou/co2unit-30aea42a50bc/alive?site_code=x"])
def test_server_survives_garbage_requests(uwsgi_server, path):
    for raw in (b"\x00\x01\x02garbage\r\n\r\n", b"GET\r\n\r\n", b"PUT / HTTP/1.0\r\n"
                b"Content-Length: 99999999999\r\n\r\n"):
        with contextlib.suppress(OSError):  # a closed connection is a fine answer to garbage
            raw_exchange(uwsgi_server, raw, timeout=5)
    assert uwsgi_server.request("POST", path).status == 200
