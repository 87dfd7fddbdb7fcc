"""The limit for the WebSocket gateway benchmark: a bare `websockets` server that stores nothing.

    .venv/bin/python bench/bare_ws_echo.py PORT

It speaks just enough of docs/websocket.md for the devices: a `welcome` (no session) for the
`hello`, an `ack` of its seq for each `readings` message at once (parsed as JSON, as any server
must to learn the seq), an `error` for anything else. Its connection settings are the
gateway's defaults (ws_max_message_bytes, ws_keepalive_seconds). Prints "ready" once it
listens; SIGTERM or SIGINT closes every connection with 1001 and ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

from websockets.asyncio.server import ServerConnection, serve

from co2unit_server.records import ws_format

MAX_MESSAGE_BYTES = 65536
KEEPALIVE_S = 20.0


async def handle(ws: ServerConnection) -> None:
    async for text in ws:
        try:
            message = json.loads(text)
            kind = message["type"]
        except (ValueError, TypeError, KeyError):
            await ws.send(ws_format.error("BAD_JSON", "not a JSON object with a type"))
            continue
        if kind == "readings":
            await ws.send(ws_format.ack(message.get("seq")))
        elif kind == "hello":
            await ws.send(ws_format.welcome(None))
        else:
            await ws.send(ws_format.error("UNKNOWN_TYPE", f"unknown type {kind!r}"))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    args = parser.parse_args()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with serve(handle, "127.0.0.1", args.port, max_size=MAX_MESSAGE_BYTES,
                     ping_interval=KEEPALIVE_S, ping_timeout=KEEPALIVE_S, close_timeout=3,
                     reuse_address=True):
        print("ready", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
