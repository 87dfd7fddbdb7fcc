"""The units' HTTP/1.0 dialect: what the firmware's urequests sends, and which replies it takes."""

from __future__ import annotations

import socket
import threading

import pytest

from co2unit_server.simulator.unitclient import ProtocolError, build_request, parse_reply, request


def test_an_empty_body_goes_without_content_length():
    # urequests writes Content-Length only `if data:`; an empty PUT has none.
    assert build_request("PUT", "/p?offset=0", "h", b"") == (
        b"PUT /p?offset=0 HTTP/1.0\r\nHost: h\r\n\r\n")


def test_an_nginx_style_http_1_1_reply_is_taken():
    reply = parse_reply(b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nContent-Type: application/json"
                        b"\r\nContent-Length: 3\r\nConnection: close\r\n\r\n{}\n")
    assert (reply.status, reply.reason, reply.json()) == (200, "OK", {})


def test_a_status_line_without_reason_and_with_extra_blanks_is_taken():
    assert parse_reply(b"HTTP/1.0  416\r\n\r\n{}").status == 416


@pytest.mark.parametrize(("raw", "status"), [
    (b"HTTP/1.0 200 OK\r\nContent-Type: appl", 200),  # a clean close inside the headers
    (b"HTTP/1.0 200 OK\nContent-Length: 2\n\n{}", 200),  # bare LF: all of it is headers
])
def test_headers_end_at_the_close_and_the_body_is_then_empty(raw, status):
    reply = parse_reply(raw)
    assert (reply.status, reply.body) == (status, b"")


@pytest.mark.parametrize("raw", [
    b"",
    b"HTTP/1.0\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    b"HTTP/1.0 302 FOUND\r\nLocation: /elsewhere\r\n\r\n",
    b"HTTP/1.0 308 PERMANENT REDIRECT\r\nLocation: /ou/x/alive/\r\n\r\n",
])
def test_replies_the_firmware_raises_on_are_refused(raw):
    with pytest.raises(ProtocolError):
        parse_reply(raw)


def test_what_the_firmware_lets_through_is_let_through():
    # Its checks are case-sensitive and a Location on a 2xx is ignored: the unit goes on, with
    # the chunk framing as its body.
    chunked = parse_reply(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                          b"2\r\n{}\r\n0\r\n\r\n")
    assert chunked.body == b"2\r\n{}\r\n0\r\n\r\n"
    assert parse_reply(b"HTTP/1.0 200 OK\r\nLocation: /x\r\n\r\n{}").json() == {}


def test_the_body_is_read_until_close_whatever_content_length_says():
    """A clean close after a short body is a whole reply to the firmware (the update hazard)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 40)

        thread = threading.Thread(target=serve)
        thread.start()
        reply = request("127.0.0.1", listener.getsockname()[1], "GET", "/f", timeout=10)
        thread.join(timeout=10)
    assert (reply.status, reply.body, reply.headers["content-length"]) == (200, b"x" * 40, "100")
