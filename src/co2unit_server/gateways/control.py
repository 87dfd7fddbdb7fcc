"""The gateway process's control socket: `var/gateways.sock` (Config.control_socket).

The CLI (`co2unit-server session start`) and the web app (the admin API, the live page) reach
the running gateway through it: one JSON request line, one JSON answer line, then close.
The socket file is created with mode 0600 (its owner is the server's user), so only that user
and root can start or stop a session from the machine; the web side goes through its own auth.

    request:  {"command": "session-start", "name": "drill-3"}
    answer:   {"ok": true, ...}  or  {"ok": false, "error": "why"}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class GatewayUnavailable(RuntimeError):
    """The gateway process is not running (or not answering) at the control socket."""


class ControlServer:
    """Answers control requests with the handler registered for their `command`."""

    def __init__(self, path: Path, handlers: dict[str, Handler]) -> None:
        self.path = path
        self.handlers = handlers
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a process that was killed
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path),
                                                           limit=MAX_REQUEST_BYTES)
        finally:
            os.umask(old_umask)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            answer = await self._answer(await reader.readline())
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError) as exc:
            log.warning("control request failed: %s", exc)
        finally:
            writer.close()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "request is not a JSON line"}
        handler = self.handlers.get(request.get("command")) if isinstance(request, dict) else None
        if handler is None:
            return {"ok": False, "error": f"unknown command (known: {', '.join(self.handlers)})"}
        try:
            return {"ok": True, **await handler(request)}
        except ValueError as exc:  # the handler's way to refuse a request
            return {"ok": False, "error": str(exc)}
        except Exception:
            log.exception("control command %s failed", request.get("command"))
            return {"ok": False, "error": "internal error in the gateway (see its log)"}


def call(path: Path, command: str, timeout: float = 5.0, **args: Any) -> dict[str, Any]:
    """Send one request to the running gateway and return its answer (raises
    GatewayUnavailable when no gateway listens there)."""
    request = json.dumps({"command": command, **args}).encode() + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(request)
            answer = b""
            while not answer.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                answer += chunk
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise GatewayUnavailable(f"no gateway process at {path} (is `co2unit-server gateways` "
                                 "running with ws_gateway_port set?)") from exc
    except OSError as exc:
        raise GatewayUnavailable(f"gateway control socket {path}: {exc}") from exc
    try:
        return json.loads(answer)
    except ValueError as exc:
        raise GatewayUnavailable(f"gateway control socket {path}: no answer") from exc
