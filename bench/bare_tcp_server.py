"""The floors for the TCP gateway benchmark: asyncio servers that read each connection to EOF.

    .venv/bin/python bench/bare_tcp_server.py PORT            # keeps nothing
    .venv/bin/python bench/bare_tcp_server.py PORT --durable DIR

`--durable` appends each packet to its device's raw log under DIR and fsyncs it with the
gateway's own group commit (rawlog.RawLog, rawlog.GroupCommit), but parses and stores
nothing: what durability alone costs. Either prints "ready" once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from pathlib import Path

from co2unit_server.records.rawlog import GroupCommit, RawLine, RawLog, ts_text
from co2unit_server.records.tcp_format import device_name


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    data = b""
    while chunk := await reader.read(65536):
        data += chunk
    return data


def bare_handler():
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_to_eof(reader)
        writer.close()
    return handle


def durable_handler(log: RawLog, commit: GroupCommit):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await read_to_eof(reader)
        host, port = writer.get_extra_info("peername")[:2]
        line = RawLine(ts_text(time.time_ns() // 1000), f"{host}:{port}", "eof", "ok", "", data)
        log.append(device_name(data), line)
        writer.close()
        await commit.durable()
    return handle


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--durable", type=Path, help="raw logs here, fsynced")
    parser.add_argument("--sync-ms", type=float, default=5.0)
    args = parser.parse_args()
    log = None
    if args.durable:
        log = RawLog(args.durable, "tcp", 1024 * 1024)
        handle = durable_handler(log, GroupCommit(log.sync, args.sync_ms / 1000))
    else:
        handle = bare_handler()
    server = await asyncio.start_server(handle, "127.0.0.1", args.port, backlog=4096)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()
    if log is not None:
        log.close()


if __name__ == "__main__":
    asyncio.run(main())
