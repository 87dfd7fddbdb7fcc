"""An HTTP/1.0 client that talks exactly as the units' firmware does.

One new TCP connection per request; `METHOD /path?query HTTP/1.0`, a `Host:` header without
port, `Content-Length:` only when there is a body (the firmware's urequests writes it only for
a non-empty one), no other headers; the reply is read until the server closes the connection,
whatever its Content-Length says. Used by the tests, the benchmarks and the simulator.
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
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode("latin-1") + b"\r\n" + (body or b"")


def parse_reply(raw: bytes) -> Reply:
    """Parse as the firmware does: status line, CRLF header lines, then everything else.

    Headers end at an empty CRLF line or at the close: a reply cut after its status line is
    that status with an empty body (a 200 then still counts as delivered, and its JSON fails).
    Its two refusals are kept, case-sensitive as in its urequests: a `Transfer-Encoding:` line
    naming chunked, and a `Location:` line on a status outside 2xx (a lower-case
    `transfer-encoding` passes, and the chunk framing then lands in the body).
    """
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ProtocolError(f"bad status line {lines[0]!r}")
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        if line.startswith(b"Transfer-Encoding:") and b"chunked" in line:
            raise ProtocolError(f"unsupported {line!r} (the firmware raises on it)")
        if line.startswith(b"Location:") and not 200 <= status <= 299:
            raise ProtocolError(f"a redirect ({status}, {line!r}): the firmware raises on it")
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    reason = parts[2].decode("latin-1").rstrip() if len(parts) > 2 else ""
    return Reply(status, reason, headers, body, head)


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
