"""An HTTP/1.0 client that talks exactly as the units' firmware does.

One new TCP connection per request; `METHOD /path?query HTTP/1.0`, a `Host:` header without
port, `Content-Length:` only when there is a body, no other headers; the reply is read until
the server closes the connection. Used by the tests, the benchmarks and the simulator.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from typing import Any


class ProtocolError(ConnectionError):
    """The reply is cut off or not something a unit could parse (as a dropped link is)."""


@dataclass
class Reply:
    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names
    body: bytes = b""
    raw_head: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


def build_request(method: str, path: str, host: str, body: bytes | None = None) -> bytes:
    """The bytes a unit sends: request line, Host, Content-Length only with a body."""
    head = f"{method} {path} HTTP/1.0\r\nHost: {host}\r\n"
    if body is not None:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode("latin-1") + b"\r\n" + (body or b"")


def parse_reply(raw: bytes) -> Reply:
    """Parse as the firmware does: status line, CRLF header lines, then everything else."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ProtocolError(f"no end of headers in reply: {raw[:200]!r}")
    lines = head.split(b"\r\n")
    parts = lines[0].decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ProtocolError(f"bad status line {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return Reply(int(parts[1]), parts[2] if len(parts) > 2 else "", headers, body, head)


def request(
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    timeout: float = 30.0,
) -> Reply:
    """Send one request on a new connection and read the reply until the server closes."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(build_request(method, path, host, body))
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return parse_reply(b"".join(chunks))
