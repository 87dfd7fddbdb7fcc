"""Streaming sessions: the keeper (persist, then broadcast), its log, the importer's rebuild."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from toolchain_fixtures import Tree, import_tree, open_db

from co2unit_server.database import db
from co2unit_server.gateways.session_keeper import SessionKeeper
from co2unit_server.records import sessions

T0 = datetime(2026, 12, 6, 1, 52, 11, 250000, tzinfo=UTC)


class FixedClock:
    """A clock that moves on only when told (ids of one second collide on purpose)."""

    def __init__(self, at: datetime = T0) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def table(config) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(config.db_path)) as conn:
        return conn.execute("SELECT id, name, started_at, stopped_at FROM sessions "
                            "ORDER BY started_at").fetchall()


def log_lines(config) -> list[dict]:
    path = sessions.log_path(config.remote_data_dir)
    return [json.loads(line) for line in path.read_text().splitlines()]


def keeper_with_listener(config, clock=None):
    """A keeper whose listener records, at each call, what the log and the table held."""
    keeper = SessionKeeper(config, clock or FixedClock())
    heard: list[tuple] = []

    async def listener(command: str, session_id: str, at: str) -> int:
        heard.append((command, session_id, at, len(log_lines(config)), table(config)))
        return 7

    keeper.listeners.append(listener)
    return keeper, heard


def test_start_persists_before_the_broadcast_and_tags_the_current_session(config):
    keeper, heard = keeper_with_listener(config)
    answer = asyncio.run(keeper.start("Drill 3 / north"))
    sid = "s-20261206T015211Z-drill-3-north"
    assert answer == {"session": {"id": sid, "name": "Drill 3 / north", "state": "started",
                                  "started_at": "2026-12-06T01:52:11.250000Z"},
                      "devices_reached": 7}
    # When the listener ran, the start was in the log and in the table already.
    (command, heard_id, at, lines, rows), = heard
    assert (command, heard_id, at) == ("start", sid, "2026-12-06T01:52:11.250000Z")
    assert lines == 1
    assert rows == [(sid, "Drill 3 / north", "2026-12-06T01:52:11.250000", None)]
    assert keeper.current_id == sid and keeper.current == answer["session"]
    assert log_lines(config) == [{"event": "start", "id": sid, "name": "Drill 3 / north",
                                  "at": "2026-12-06T01:52:11.250000"}]


def test_stop_stamps_the_stop_then_broadcasts_it(config):
    clock = FixedClock()
    keeper, heard = keeper_with_listener(config, clock)

    async def run() -> dict:
        await keeper.start()
        clock.at = T0 + timedelta(minutes=5)
        return await keeper.stop()

    answer = asyncio.run(run())
    assert answer["session"] == {"id": "s-20261206T015211Z", "name": None, "state": "stopped",
                                 "started_at": "2026-12-06T01:52:11.250000Z",
                                 "stopped_at": "2026-12-06T01:57:11.250000Z"}
    command, sid, at, lines, rows = heard[-1]
    assert (command, sid, at, lines) == ("stop", "s-20261206T015211Z",
                                         "2026-12-06T01:57:11.250000Z", 2)
    assert rows[0][3] == "2026-12-06T01:57:11.250000"
    assert keeper.current is None and keeper.current_id is None


def test_a_second_start_and_a_stop_without_start_are_refused(config):
    keeper, heard = keeper_with_listener(config)

    async def run() -> None:
        with pytest.raises(ValueError, match="no session is running"):
            await keeper.stop()
        await keeper.start("a")
        with pytest.raises(ValueError, match="s-20261206T015211Z-a is running since"):
            await keeper.start("b")

    asyncio.run(run())
    assert [h[0] for h in heard] == ["start"]
    assert len(log_lines(config)) == 1 and len(table(config)) == 1


def test_concurrent_starts_give_one_session(config):
    keeper, heard = keeper_with_listener(config)

    async def run() -> list:
        return await asyncio.gather(*(keeper.start(str(i)) for i in range(5)),
                                    return_exceptions=True)

    results = asyncio.run(run())
    assert sum(isinstance(r, dict) for r in results) == 1
    assert sum(isinstance(r, ValueError) for r in results) == 4
    assert len(heard) == 1 and len(table(config)) == 1


def test_ids_are_unique_within_a_second_and_names_are_checked(config):
    keeper = SessionKeeper(config, FixedClock())

    async def cycle(name: str | None) -> str:
        sid = (await keeper.start(name))["session"]["id"]
        await keeper.stop()
        return sid

    async def run() -> list[str]:
        return [await cycle(name) for name in (None, None, "x", "x", "  ", "ÆØÅ!")]

    assert asyncio.run(run()) == ["s-20261206T015211Z", "s-20261206T015211Z-2",
                                  "s-20261206T015211Z-x", "s-20261206T015211Z-x-2",
                                  "s-20261206T015211Z-3", "s-20261206T015211Z-4"]
    for bad in (3, "x" * 101, "two\nlines"):
        with pytest.raises(ValueError):
            asyncio.run(keeper.start(bad))
    assert keeper.current is None


def test_a_restart_resumes_the_running_session_from_the_log(config):
    first, _ = keeper_with_listener(config)
    asyncio.run(first.start("long run"))
    # The table is lost: the log alone brings the session back, and the table with it.
    config.db_path.unlink()
    again = SessionKeeper(config, FixedClock(T0 + timedelta(hours=1)))
    assert again.current == first.current
    assert table(config) == [(first.current_id, "long run", "2026-12-06T01:52:11.250000", None)]
    answer = asyncio.run(again.stop())
    assert answer["session"]["stopped_at"] == "2026-12-06T02:52:11.250000Z"
    assert SessionKeeper(config).current is None


def test_a_torn_last_line_is_left_out_and_the_log_goes_on(config, caplog):
    keeper = SessionKeeper(config, FixedClock())
    asyncio.run(keeper.start())
    path = sessions.log_path(config.remote_data_dir)
    with open(path, "ab") as f:
        f.write(b'{"event": "stop", "id": "s-2026')  # a crash mid-write
    again = SessionKeeper(config, FixedClock(T0 + timedelta(seconds=1)))
    assert again.current_id == "s-20261206T015211Z"
    assert "1 unreadable" in caplog.text
    asyncio.run(again.stop())
    records, bad = sessions.read_log(path)
    assert bad == 1 and [r["event"] for r in records] == ["start", "stop"]


def test_handlers_answer_the_control_socket(config):
    keeper = SessionKeeper(config, FixedClock())
    handlers = keeper.handlers()
    assert set(handlers) == {"session-start", "session-stop", "session-show"}

    async def run() -> list[dict]:
        started = await handlers["session-start"]({"command": "session-start", "name": "n"})
        shown = await handlers["session-show"]({"command": "session-show"})
        stopped = await handlers["session-stop"]({"command": "session-stop"})
        return [started, shown, stopped]

    started, shown, stopped = asyncio.run(run())
    # No listener counted devices: the answer says so rather than claim none were reached.
    assert started["devices_reached"] is None
    assert shown == {"session": started["session"]}
    assert stopped["session"]["state"] == "stopped"


def test_a_failing_listener_does_not_stop_the_others(config, caplog):
    keeper, heard = keeper_with_listener(config)

    async def broken(command: str, session_id: str, at: str) -> int:
        raise RuntimeError("boom")

    keeper.listeners.insert(0, broken)
    assert asyncio.run(keeper.start())["devices_reached"] == 7
    assert len(heard) == 1 and "start not delivered" in caplog.text


def test_an_unwritable_table_still_starts_the_session_from_the_log(config, caplog):
    config.db_path.parent.mkdir(parents=True)
    config.db_path.write_bytes(b"not a database" * 100)
    keeper, heard = keeper_with_listener(config)
    keeper.listeners.clear()
    assert asyncio.run(keeper.start())["session"]["state"] == "started"
    assert "co2unit-server import` adds it" in caplog.text
    assert len(log_lines(config)) == 1


def test_the_importer_rebuilds_the_table_from_the_log(config, tmp_path):
    clock = FixedClock()
    keeper = SessionKeeper(config, clock)

    async def run() -> None:
        await keeper.start("one")
        clock.at += timedelta(minutes=1)
        await keeper.stop()
        clock.at += timedelta(minutes=1)
        await keeper.start("two")

    asyncio.run(run())
    live = table(config)
    tree = Tree(tmp_path / "tree")
    tree.data_dir.mkdir(parents=True)
    (tree.data_dir / "sessions").symlink_to(config.remote_data_dir / "sessions")
    conn = open_db(tree)
    out: list[str] = []
    import_tree(tree, conn, out)
    assert conn.execute("SELECT * FROM sessions ORDER BY started_at").fetchall() == live
    assert any("2 new rows" in line for line in out if line.startswith("measurements"))
    # The gateway stops "two" later: the next import stamps it; nothing is counted twice.
    clock.at += timedelta(minutes=1)
    asyncio.run(SessionKeeper(config, clock).stop())
    import_tree(tree, conn, out)
    assert conn.execute("SELECT * FROM sessions ORDER BY started_at").fetchall() == table(config)
    assert "sessions stopped since: 1" in out[-2]
    assert sessions.listed(conn)[0].id == "s-20261206T015411Z-two"


def test_listed_is_newest_first_and_empty_without_the_table(config):
    conn = db.connect(config.db_path)
    assert sessions.listed(conn) == []
    db.init_schema(conn)
    with conn:
        conn.execute("BEGIN")
        sessions.store(conn, [sessions.Session("a", None, "2026-01-01T00:00:00.000000",
                                               "2026-01-01T01:00:00.000000"),
                              sessions.Session("b", "B", "2026-01-02T00:00:00.000000")])
    assert [s.id for s in sessions.listed(conn)] == ["b", "a"]
    assert sessions.running(sessions.listed(conn)).id == "b"
    assert [s.id for s in sessions.listed(conn, limit=1)] == ["b"]
