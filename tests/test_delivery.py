"""Delivery tracking: update_downloads rows, update_states, and a fleet that gets renamed."""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from collections.abc import Callable

import pytest

from co2unit_server.cli import main
from co2unit_server.database import db
from co2unit_server.simulator.fleet import Fleet, FleetConfig, unit_ids
from co2unit_server.updates.delivery import UpdateState, update_states
from co2unit_server.updates.publish import UpdateContent, publish

from conftest import HW_ID, OTHER_HW_ID

ID_PATCH = "conf-patch/ou-id.json"


def wait_for(check: Callable[[], object], timeout: float = 15.0) -> object:
    """The first truthy result of `check`, polled until `timeout`; fails the test otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    pytest.fail(f"nothing after {timeout} s")


@pytest.fixture
def conn() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    db.init_schema(conn)
    return conn


def download(conn, unit: str, name: str, file: str | None, ts: str, size: int = 10,
             sent: int | None = None) -> None:
    sent = size if sent is None else sent
    conn.execute(db.INSERT_DOWNLOAD, (f"2026-11-29T{ts}.000000", name, file, unit, sent, size,
                                      int(sent == size)))


def ping(conn, unit: str, ts: str, nickname: str) -> None:
    conn.execute("INSERT INTO pings (ping_ts, ping_date, ping_time, unit_id, nickname) "
                 "VALUES (?, '2026-11-29', ?, ?, ?)", (f"2026-11-29T{ts}.000000", ts, unit,
                                                       nickname))


def test_states_from_recorded_downloads_and_pings(tmp_path, conn):
    remote = tmp_path / "remote_data"
    units = [f"co2unit-00000000000{i}" for i in range(6)]
    flash = tmp_path / "main.py"
    flash.write_text("x = 1\n")
    nick = publish(remote, units, UpdateContent(nickname="new"), name="update-2026-11-29a")
    code = publish(remote, units, UpdateContent(flash={"main.py": flash}),
                   name="update-2026-11-29b")
    (remote / "manual").mkdir()  # not a unit: no updates/
    u0, u1, u2, u3, u4, u5 = units
    # u0: nothing downloaded. u1: the listing and half a file.
    download(conn, u1, nick.name, None, "03:00:00")
    download(conn, u1, nick.name, ID_PATCH, "03:00:01", sent=4)
    # u2: delivered, the next ping still has the old nickname. u3: then the new one.
    for unit in (u2, u3):
        download(conn, unit, nick.name, None, "03:00:00")
        download(conn, unit, nick.name, ID_PATCH, "03:00:01", sent=4)
        download(conn, unit, nick.name, ID_PATCH, "03:00:05")
        ping(conn, unit, "03:00:02", "new")  # before delivery: does not count
        ping(conn, unit, "03:00:06", "old")
    ping(conn, u3, "03:00:07", "new")
    # u4: code delivered, pinged, downloaded again after the ping (not installed), pinged.
    # u5: the same without the last ping.
    for unit in (u4, u5):
        download(conn, unit, code.name, "flash/main.py", "04:00:00")
        ping(conn, unit, "04:00:01", "x")
        download(conn, unit, code.name, "flash/main.py", "04:00:02", sent=3)
    ping(conn, u4, "04:00:03", "x")
    download(conn, u0, "update-gone", "x", "01:00:00")  # no longer on disk: not shown

    states = update_states(conn, remote)
    assert sorted(states) == units
    by = {(u, s.name): s for u, updates in states.items() for s in updates}
    assert [s.name for s in states[u0]] == [nick.name, code.name]

    def brief(unit: str, name: str) -> tuple:
        s = by[unit, name]
        return s.state, s.delivered, s.confirmed, s.files_sent, s.files

    assert brief(u0, nick.name) == ("published", None, None, 0, 1)
    assert brief(u1, nick.name) == ("downloading", None, None, 0, 1)
    assert brief(u2, nick.name) == ("delivered", "2026-11-29 03:00:05", None, 1, 1)
    assert brief(u3, nick.name) == ("confirmed", "2026-11-29 03:00:05", "2026-11-29 03:00:07",
                                    1, 1)
    assert brief(u4, code.name) == ("confirmed", "2026-11-29 04:00:00", "2026-11-29 04:00:03",
                                    1, 1)
    assert brief(u5, code.name) == ("delivered", "2026-11-29 04:00:00", None, 1, 1)
    published = by[u0, nick.name].published
    assert published is not None and len(published) == 19 and published[10] == " "
    assert update_states(conn, remote, [u3, "co2unit-ffffffffffff"]) == {
        u3: states[u3], "co2unit-ffffffffffff": []}


def test_update_states_of_a_thousand_units(tmp_path, conn, monkeypatch):
    """Half the units confirmed, half still downloading (bench/bench_delivery.py times it)."""
    remote = tmp_path / "remote_data"
    monkeypatch.setattr(os, "fsync", lambda fd: None)  # durability is not what this measures
    units = [f"co2unit-{i:012x}" for i in range(1000)]
    publish(remote, units, UpdateContent(nickname="new"), name="update-2026-11-29a")
    for i, unit in enumerate(units):
        download(conn, unit, "update-2026-11-29a", None, "03:00:00")
        download(conn, unit, "update-2026-11-29a", ID_PATCH, "03:00:01", sent=i % 2 * 10)
        for minute in range(10):
            ping(conn, unit, f"03:{minute + 1:02d}:00", "new" if minute > 4 else "old")
    states = update_states(conn, remote)
    counts = {}
    for updates in states.values():
        counts[updates[0].state] = counts.get(updates[0].state, 0) + 1
    assert counts == {"confirmed": 500, "downloading": 500}


def test_the_updates_command_prints_the_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CO2UNIT_REMOTE_DATA_DIR", str(tmp_path / "remote_data"))
    monkeypatch.setenv("CO2UNIT_VAR_DIR", str(tmp_path / "var"))  # no database yet
    publish(tmp_path / "remote_data", [HW_ID, OTHER_HW_ID], UpdateContent(nickname="n"),
            name="update-2026-11-29a")
    assert main(["updates", "--unit", HW_ID]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["unit", "update", "state"]
    assert len(lines) == 2 and lines[1].split()[:3] == [HW_ID, "update-2026-11-29a", "published"]
    assert lines[1].split()[-1] == "0/1"


def recorded(server, file: str | None) -> list[tuple]:
    path = server.var_dir / "db.sqlite3"
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        try:
            return conn.execute("SELECT update_name, unit_id, bytes, size, full FROM "
                                "update_downloads WHERE file IS ?", (file,)).fetchall()
        except sqlite3.OperationalError:  # the server's writer is still creating the schema
            return []


def test_a_download_cut_short_is_recorded_as_partial(tmp_path, uwsgi_server):
    big = tmp_path / "firmware.bin"
    big.write_bytes(os.urandom(16 * 1024 * 1024))
    (uwsgi_server.remote_data / HW_ID).mkdir(parents=True)
    name = publish(uwsgi_server.remote_data, [HW_ID],
                   UpdateContent(nickname="n", flash={"firmware.bin": big})).name
    listing = uwsgi_server.request("GET", f"/ou/{HW_ID}/updates/{name}?recursive=True")
    whole = uwsgi_server.request("GET", f"/ou/{HW_ID}/updates/{name}/{ID_PATCH}")
    assert listing.status == whole.status == 200
    with socket.create_connection((uwsgi_server.host, uwsgi_server.port), timeout=10) as sock:
        sock.sendall(f"GET /ou/{HW_ID}/updates/{name}/flash/firmware.bin HTTP/1.0\r\n"
                     f"Host: {uwsgi_server.host}\r\n\r\n".encode())
        assert len(sock.recv(100)) > 0
    # Closed with unread bytes: a reset, as a unit whose link dropped.
    (cut,) = wait_for(lambda: recorded(uwsgi_server, "flash/firmware.bin"))
    assert cut[:2] == (name, HW_ID) and cut[3] == big.stat().st_size
    assert cut[4] == 0 and cut[2] < cut[3]
    assert wait_for(lambda: recorded(uwsgi_server, ID_PATCH)) == [
        (name, HW_ID, len(whole.body), len(whole.body), 1)]
    assert wait_for(lambda: recorded(uwsgi_server, None)) == [
        (name, HW_ID, len(listing.body), len(listing.body), 1)]
    with sqlite3.connect(uwsgi_server.var_dir / "db.sqlite3") as conn:
        (state,) = update_states(conn, uwsgi_server.remote_data)[HW_ID]
    assert (state.state, state.files_sent, state.files) == ("downloading", 1, 2)


def test_a_fleet_renamed_by_publish_update_confirms_exactly_those_units(
        tmp_path, uwsgi_server, monkeypatch):
    monkeypatch.setenv("CO2UNIT_REMOTE_DATA_DIR", str(uwsgi_server.remote_data))
    monkeypatch.setenv("CO2UNIT_VAR_DIR", str(uwsgi_server.var_dir))
    renamed, others = unit_ids(5, seed=21)[:3], unit_ids(5, seed=21)[3:]
    codes: list[int] = []

    def on_cycle(done: int) -> None:
        if done == 5:  # every unit has had its first day: publish before the second
            args = [a for hw_id in renamed for a in ("--unit", hw_id)]
            codes.append(main(["publish-update", *args, "--nickname", "renamed"]))

    cfg = FleetConfig(host=uwsgi_server.host, port=uwsgi_server.port,
                      remote_data=uwsgi_server.remote_data, units=5, days=3, seed=21,
                      timeout=5, budget_s=30, workdir=tmp_path / "cards", on_cycle=on_cycle)
    result = Fleet(cfg).run()
    assert result.passed, result.summary()
    assert codes == [0] and result.updates == 3

    def all_confirmed() -> dict[str, list[UpdateState]] | None:
        with sqlite3.connect(uwsgi_server.var_dir / "db.sqlite3") as conn:
            states = update_states(conn, uwsgi_server.remote_data)
        done = all(s.state == "confirmed" for u in renamed for s in states.get(u, []))
        return states if done else None

    states = wait_for(all_confirmed)
    assert sorted(states) == sorted(renamed)  # the other two have no updates/ at all
    for hw_id in renamed:
        (state,) = states[hw_id]
        assert state.state == "confirmed" and state.files_sent == state.files == 1
        assert state.published <= state.delivered <= state.confirmed
    with sqlite3.connect(uwsgi_server.var_dir / "db.sqlite3") as conn:
        for hw_id in renamed:
            nicknames = [n for (n,) in conn.execute(
                "SELECT nickname FROM pings WHERE unit_id = ? ORDER BY ping_ts", (hw_id,))]
            first = nicknames.index("renamed")
            assert first > 0 and set(nicknames[first:]) == {"renamed"}
            assert len(nicknames[first:]) >= 2  # the cycle after the update, the next day
        for hw_id in others:
            nicknames = {n for (n,) in conn.execute(
                "SELECT nickname FROM pings WHERE unit_id = ?", (hw_id,))}
            assert nicknames and "renamed" not in nicknames
    for hw_id in others:
        assert not (uwsgi_server.remote_data / hw_id / "updates").exists()
