"""Streaming sessions: an admin starts one, every connected WebSocket device is told, and the
readings received until it is stopped carry its id (measurements.session).

The record of truth is an append-only JSON-lines log, remote_data/sessions/sessions.log:

    {"event": "start", "id": "s-20261206T015211Z-drill-3", "name": "drill-3",
     "at": "2026-12-06T01:52:11.123456"}
    {"event": "stop", "id": "s-20261206T015211Z-drill-3", "at": "2026-12-06T02:30:00.000000"}

(`at` in UTC, as the tables write it). A start or stop is fsynced to the log and stored in the
`sessions` table BEFORE the command goes out, so a device never hears of a session the server
could forget. The importer rebuilds the table from the log (`fold` and `store` below, shared),
and a restarted gateway resumes the session the log says is running (its SessionKeeper, in
gateways/session_keeper.py).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOG_DIR = "sessions"  # below remote_data_dir
LOG_NAME = "sessions.log"
MAX_NAME = 100
SLUG_CHARS = 40
# (command "start" | "stop", session id, at as ISO UTC with Z) -> devices reached, if it counts
Listener = Callable[[str, str, str], Awaitable[int | None]]
Clock = Callable[[], datetime]
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")



def log_path(remote_data_dir: Path) -> Path:
    return remote_data_dir / LOG_DIR / LOG_NAME


def z(text: str | None) -> str | None:
    """A stored UTC time as ISO with Z (what the API, the CLI and the devices see)."""
    return None if text is None else text + "Z"


@dataclass(frozen=True)
class Session:
    """A row of `sessions` (times in UTC as the tables write them)."""

    id: str
    name: str | None
    started_at: str
    stopped_at: str | None = None

    @property
    def running(self) -> bool:
        return self.stopped_at is None

    def public(self) -> dict[str, Any]:
        """As devices (welcome), the CLI and the API see it."""
        body = {"id": self.id, "name": self.name,
                "state": "started" if self.running else "stopped",
                "started_at": z(self.started_at)}
        if not self.running:
            body["stopped_at"] = z(self.stopped_at)
        return body


# --- the log: the record of truth -------------------------------------------------------------

def start_record(session: Session) -> dict[str, Any]:
    return {"event": "start", "id": session.id, "name": session.name, "at": session.started_at}


def stop_record(session: Session) -> dict[str, Any]:
    return {"event": "stop", "id": session.id, "at": session.stopped_at}


def read_log(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The log's records, and how many lines could not be read (torn by a crash, edited)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    records, bad = [], 0
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            records.append(_checked(json.loads(line)))
        except (ValueError, TypeError, KeyError):
            bad += 1
    return records, bad


def _checked(record: Any) -> dict[str, Any]:
    if record["event"] not in ("start", "stop") or not isinstance(record["id"], str):
        raise ValueError("not a session record")
    datetime.fromisoformat(record["at"])
    return record


def fold(records: Iterable[dict[str, Any]]) -> tuple[dict[str, Session], int]:
    """The sessions the records describe, by id in start order, and how many records did not
    fit (a stop of an unknown or already stopped session, a second start of an id)."""
    sessions: dict[str, Session] = {}
    misfits = 0
    for r in records:
        known = sessions.get(r["id"])
        if r["event"] == "start" and known is None:
            sessions[r["id"]] = Session(r["id"], r.get("name"), r["at"])
        elif r["event"] == "stop" and known is not None and known.running:
            sessions[r["id"]] = replace(known, stopped_at=r["at"])
        else:
            misfits += 1
    return sessions, misfits


def append_durably(path: Path, record: dict[str, Any]) -> None:
    """Append one line and fsync it (and the directory, when the log is new)."""
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # a line torn by a crash stays one unreadable line of its own
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    if new:  # the file's name must survive a power cut too
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# --- the table ----------------------------------------------------------------------------------

def store(conn: sqlite3.Connection, sessions: Iterable[Session]) -> tuple[int, int]:
    """Make the table hold `sessions`, in the caller's transaction: (inserted, stop times set)."""
    inserted = stamped = 0
    for s in sessions:
        row = conn.execute("SELECT stopped_at FROM sessions WHERE id = ?", (s.id,)).fetchone()
        if row is None:
            conn.execute("INSERT INTO sessions (id, name, started_at, stopped_at) "
                         "VALUES (?, ?, ?, ?)", (s.id, s.name, s.started_at, s.stopped_at))
            inserted += 1
        elif row[0] != s.stopped_at:
            conn.execute("UPDATE sessions SET stopped_at = ? WHERE id = ?", (s.stopped_at, s.id))
            stamped += 1
    return inserted, stamped


def listed(conn: sqlite3.Connection, limit: int | None = None) -> list[Session]:
    """The sessions in the table, newest first (an old database without the table: none)."""
    try:
        rows = conn.execute("SELECT id, name, started_at, stopped_at FROM sessions "
                            "ORDER BY started_at DESC, id DESC LIMIT ?",
                            (-1 if limit is None else limit,)).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return []
    return [Session(*row) for row in rows]


def running(sessions: Iterable[Session]) -> Session | None:
    """The newest session not stopped."""
    return next((s for s in sessions if s.running), None)


# --- names and ids ----------------------------------------------------------------------------

def check_name(raw: object) -> str | None:
    """A session's name as given (None when empty); ValueError for anything else."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ValueError("a session name must be text")
    name = raw.strip()
    if len(name) > MAX_NAME or _CONTROL.search(name):
        raise ValueError(f"a session name is up to {MAX_NAME} characters on one line")
    return name or None


def new_id(started: datetime, name: str | None, taken: Iterable[str]) -> str:
    """s-<UTC second>[-<name slug>], with -2, -3, ... when that is taken already."""
    slug = _NOT_SLUG.sub("-", (name or "").lower()).strip("-")[:SLUG_CHARS].strip("-")
    base = f"s-{started:%Y%m%dT%H%M%SZ}" + (f"-{slug}" if slug else "")
    taken = set(taken)
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def utc_now() -> datetime:
    return datetime.now(UTC)


def utc_text(at: datetime) -> str:
    """A time as the tables write UTC."""
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")
