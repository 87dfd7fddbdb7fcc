"""Write transactions (connections are in autocommit mode) and the toolchain_state table."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error; waits busy_timeout for the lock."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def read_state(conn: sqlite3.Connection, name: str) -> str | None:
    """A value of toolchain_state, or None."""
    row = conn.execute("SELECT value FROM toolchain_state WHERE name = ?", (name,)).fetchone()
    return row[0] if row else None


def write_state(conn: sqlite3.Connection, name: str, value: str) -> None:
    conn.execute("INSERT OR REPLACE INTO toolchain_state VALUES (?, ?)", (name, value))
