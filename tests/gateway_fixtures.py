"""Helpers shared by the gateway tests: weather-station packets and bounded polling."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from co2unit_server.database import db
from co2unit_server.records import tcp_format
from co2unit_server.simulator.launcher import GatewayProcess

# docs/gateways.md's example: 2 records, light 1234/1244, 54.997/55.096 %RH, 21.501/21.544 °C.
EXAMPLE = bytes.fromhex("0c00100e7800060103" "d204ec7c9463" "dc04207da463")
S = 1_000_000  # microseconds

T = TypeVar("T")


def packet(records: list[bytes], wake: int = 3600, every: int = 120, device_id: int = 1,
           record_bytes: int = 6) -> bytes:
    body = b"".join(records)
    return tcp_format.HEADER.pack(len(body), wake, every, record_bytes, device_id, 3) + body


def records(first: int, count: int) -> list[bytes]:
    """Distinct type-1 records: light counts up from `first`."""
    return [struct.pack("<HHH", first + i, 31980, 25492) for i in range(count)]


def send(port: int, data: bytes, timeout: float = 10.0) -> bool:
    """Send as a device does, then wait for the gateway to close: True once it did.

    The gateway closes a connection only after it has read it to EOF and appended the packet
    to its raw log, so a True here is a packet the gateway read whole.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            return s.recv(1) == b""
    except OSError:
        return False


def wait_for(predicate: Callable[[], T], timeout: float = 20.0) -> T:
    """Poll until predicate() is truthy (bounded); its last value."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def db_rows(db_path: Path, sql: str, *args: object) -> list[tuple]:
    """Rows from a gateway's database; none while its writer has not created the tables."""
    if not db_path.exists():
        return []
    with contextlib.closing(db.connect_readonly(db_path)) as conn:
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError:  # the writer has not created the tables yet
            return []


def query(gateway: GatewayProcess, sql: str, *args: object) -> list[tuple]:
    """db_rows() of the gateway's own database."""
    return db_rows(gateway.var_dir / "db.sqlite3", sql, *args)
