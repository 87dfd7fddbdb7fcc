"""The SQLite database (var/db.sqlite3): connections and schema, shared by server and toolchain."""

from __future__ import annotations

import sqlite3
from pathlib import Path

# Column names follow the reference toolchain so existing SQL keeps working; add, don't rename.
SCHEMA = """
CREATE TABLE IF NOT EXISTS pings (
    ping_ts   TEXT NOT NULL,
    ping_date TEXT NOT NULL,
    ping_time TEXT NOT NULL,
    unit_id   TEXT NOT NULL,
    nickname  TEXT,
    rssi_raw  INTEGER,
    rssi_dbm  INTEGER,
    ber_raw   INTEGER
);
-- The server inserts live pings and the importer reads the same pings from the TSV log:
-- this key lets both use INSERT OR IGNORE without duplicates.
CREATE UNIQUE INDEX IF NOT EXISTS pings_unit_ts ON pings (unit_id, ping_ts);
CREATE INDEX IF NOT EXISTS pings_ts ON pings (ping_ts);
"""


def connect(path: Path, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """Open the database in WAL mode so readers and the ping writer work at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None,
                           check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA journal_mode = WAL")
    # Durable except for the last transactions on power loss, without a sync per commit.
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def init_schema(conn: sqlite3.Connection) -> None:
    """Create every table and index that does not exist yet."""
    conn.executescript(SCHEMA)
