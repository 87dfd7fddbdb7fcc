"""The running streaming session in the gateway process: its start and stop, durable in the
sessions log (records/sessions.py) before any device hears of it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import Any

from ..core.config import Config
from ..database import db
from ..records.sessions import (
    Clock,
    Listener,
    Session,
    append_durably,
    check_name,
    fold,
    log_path,
    new_id,
    read_log,
    running,
    start_record,
    stop_record,
    store,
    utc_now,
    utc_text,
    z,
)

log = logging.getLogger(__name__)


class SessionKeeper:
    """The running session, its start and stop, and the listeners told of each (the WebSocket
    gateway's broadcast). Its handlers answer the control socket."""

    def __init__(self, config: Config, clock: Clock = utc_now) -> None:
        self.log_path = log_path(config.remote_data_dir)
        self.db_path = config.db_path
        self.busy_timeout_ms = config.db_busy_timeout_ms
        self.clock = clock
        self.listeners: list[Listener] = []
        self._lock = asyncio.Lock()  # one start or stop at a time: no two running sessions
        records, bad = read_log(self.log_path)
        self._sessions, misfits = fold(records)
        if bad or misfits:
            log.warning("%s: %d unreadable and %d misfit line(s) left out", self.log_path, bad,
                        misfits)
        self._current = running(reversed(self._sessions.values()))
        if self._current is not None:
            log.info("session %s resumed (started %sZ)", self._current.id,
                     self._current.started_at)
        self._schema_ready = False
        # A table write that failed before (the log is written first) is made good now; and
        # the schema is made here, not in the first start's time to reach the devices.
        self._store(self._sessions.values())

    @property
    def current(self) -> dict[str, Any] | None:
        """The running session as devices see it, or None."""
        return None if self._current is None else self._current.public()

    @property
    def current_id(self) -> str | None:
        return None if self._current is None else self._current.id

    def handlers(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]]:
        """The control socket's commands."""
        return {"session-start": lambda request: self.start(request.get("name")),
                "session-stop": lambda request: self.stop(),
                "session-show": self.show}

    async def start(self, name: object = None) -> dict[str, Any]:
        """Start a session and tell every listener; ValueError when one is running already."""
        name = check_name(name)
        async with self._lock:
            if self._current is not None:
                raise ValueError(f"session {self._current.id} is running since "
                                 f"{z(self._current.started_at)}: stop it first")
            started = self.clock()
            session = Session(new_id(started, name, self._sessions), name, utc_text(started))
            await self._persist(start_record(session), session)
            self._current = session
            reached = await self._broadcast("start", session)
        log.info("session %s started (%s devices reached)", session.id, reached)
        return {"session": session.public(), "devices_reached": reached}

    async def stop(self) -> dict[str, Any]:
        """Stop the running session and tell every listener; ValueError when none runs."""
        async with self._lock:
            if self._current is None:
                raise ValueError("no session is running")
            session = replace(self._current, stopped_at=utc_text(self.clock()))
            await self._persist(stop_record(session), session)
            self._current = None
            reached = await self._broadcast("stop", session)
        log.info("session %s stopped (%s devices reached)", session.id, reached)
        return {"session": session.public(), "devices_reached": reached}

    async def show(self, request: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"session": self.current}

    async def _persist(self, record: dict[str, Any], session: Session) -> None:
        # The log first and fsynced: it is what a restart and the importer go by.
        await asyncio.to_thread(append_durably, self.log_path, record)
        self._sessions[session.id] = session
        await asyncio.to_thread(self._store, [session])

    def _store(self, sessions: Iterable[Session]) -> None:
        """Write to the table; a failure is logged, not raised (the importer adds it from the
        log), so the command still goes out."""
        try:
            with contextlib.closing(db.connect(self.db_path, self.busy_timeout_ms)) as conn:
                if not self._schema_ready:
                    db.init_schema(conn)
                    self._schema_ready = True
                with conn:
                    conn.execute("BEGIN IMMEDIATE")
                    store(conn, sessions)
        except sqlite3.Error:
            log.exception("sessions table in %s not written (%s is; `co2unit-server import` "
                          "adds it)", self.db_path, self.log_path)

    async def _broadcast(self, command: str, session: Session) -> int | None:
        """Call every listener; the devices they reached, summed (None: none counts)."""
        at = z(session.started_at if command == "start" else session.stopped_at)
        reached: int | None = None
        for listener in self.listeners:
            try:
                count = await listener(command, session.id, at)
            except Exception:
                log.exception("session %s: %s not delivered by %r", session.id, command,
                              listener)
                continue
            if isinstance(count, int):
                reached = (reached or 0) + count
        return reached
