"""Fleet soaks against the real uWSGI server, a SIGKILL in the middle, and a strict verdict."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from co2unit_server.cli import main
from co2unit_server.simulator.fleet import Fleet, FleetConfig
from co2unit_server.simulator.sdcard import READINGS_DIR


def soak_config(server, tmp_path: Path, **overrides) -> FleetConfig:
    """5 units x 10 days, 30% faulty connections, state losses and new cards: under a minute."""
    values = dict(host=server.host, port=server.port, remote_data=server.remote_data,
                  units=5, days=10, faults=0.3, seed=11, timeout=0.5, rotate_bytes=6000,
                  lose_state_rate=0.1, swap_rate=0.05, workdir=tmp_path / "cards",
                  nickname_updates=[(0, 2, "renamed-00")],
                  # A server regression must fail the soak, not spin 5 minutes per cycle.
                  budget_s=20)
    return FleetConfig(**{**values, **overrides})


def test_soak_with_faults_loses_nothing(tmp_path, uwsgi_server):
    result = Fleet(soak_config(uwsgi_server, tmp_path)).run()
    assert result.passed, result.summary()
    assert result.cycles == 50 and result.drained
    assert result.faults_injected > 20 and result.failures > 0 and result.watchdog_resets > 0
    # A new card has an empty updates/ and pulls the update again.
    assert result.lost_states > 0 and result.swaps > 0 and result.updates >= 1
    assert list(uwsgi_server.remote_data.glob("*/superseded/*/data/readings/readings-0001.tsv"))


def test_every_unit_s_readings_reach_the_database_whatever_its_firmware(tmp_path, uwsgi_server):
    fleet = Fleet(soak_config(uwsgi_server, tmp_path, faults=0.0, lose_state_rate=0,
                              swap_rate=0, units=4))
    assert fleet.run().passed
    assert main(["import", "--data-dir", str(uwsgi_server.remote_data), "--db-dir",
                 str(tmp_path / "db")]) == 0
    conn = sqlite3.connect(tmp_path / "db" / "db.sqlite3")
    rows = dict(conn.execute("SELECT unit_id, count(raw_led_signal) FROM co2_readings "
                             "GROUP BY unit_id"))
    assert sorted(rows) == sorted(u.hw_id for u in fleet.units)
    for unit in fleet.units:  # half the fleet is on firmware that writes the raw values
        assert (rows[unit.hw_id] > 0) == unit.writes_raw_values
    assert sum(u.writes_raw_values for u in fleet.units) == 2


def test_soak_survives_a_sigkill_of_the_server(tmp_path, uwsgi_server):
    killed = threading.Event()
    restarter = threading.Thread(target=lambda: (uwsgi_server.kill(), killed.set(),
                                                 uwsgi_server.start()))

    def on_cycle(done: int) -> None:
        if done == 12:  # day 3: the server dies under the fleet and comes back
            restarter.start()

    result = Fleet(soak_config(uwsgi_server, tmp_path, seed=12, on_cycle=on_cycle)).run()
    restarter.join(timeout=60)
    assert killed.is_set() and not restarter.is_alive()
    assert result.passed, result.summary()
    assert result.cycles == 50 and result.drained and result.failures > 0


def test_verification_catches_lost_and_corrupted_bytes(tmp_path, uwsgi_server):
    fleet = Fleet(soak_config(uwsgi_server, tmp_path, faults=0.0, lose_state_rate=0,
                              swap_rate=0))
    assert fleet.run().passed
    sim = fleet.units[0]
    server_dir = uwsgi_server.remote_data / sim.hw_id / READINGS_DIR
    first, second = sorted(server_dir.iterdir())[:2]
    original = first.read_bytes()

    first.write_bytes(original[:100] + b"\0" + original[101:])  # a zero-filled hole
    assert "zero-filled" in sim.verify(uwsgi_server.remote_data, drained=True)
    first.write_bytes(original[:-10])  # a gap: an earlier file left short
    assert "server has only" in sim.verify(uwsgi_server.remote_data, drained=True)
    first.write_bytes(original + original[-10:])  # duplicated bytes
    assert "the card only" in sim.verify(uwsgi_server.remote_data, drained=True)
    first.write_bytes(original)
    last = sorted(server_dir.iterdir())[-1]
    with open(last, "r+b") as f:  # acknowledged bytes gone, though still a prefix
        f.truncate(last.stat().st_size // 2)
    assert "as delivered up to byte" in sim.verify(uwsgi_server.remote_data, drained=False)
    (server_dir / "readings-0000.tsv~").write_bytes(b"")  # a stray file
    assert "not the card's first files" in sim.verify(uwsgi_server.remote_data, drained=False)
    (server_dir / "readings-0000.tsv~").unlink()
    second.unlink()  # a missing file in the middle of the sequence
    assert "not the card's first files" in sim.verify(uwsgi_server.remote_data, drained=True)


def test_simulate_command_prints_a_passing_summary(tmp_path, uwsgi_server, capsys):
    status = main(["simulate", "--url", uwsgi_server.url, "--remote-data",
                   str(uwsgi_server.remote_data), "--units", "3", "--days", "2",
                   "--faults", "0.2", "--timeout", "0.5", "--seed", "4"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "units 3  days 2  cycles 6" in out and out.rstrip().endswith("PASS")


def test_each_wake_pushes_what_was_measured_up_to_it(tmp_path, uwsgi_server):
    """The units measure through the night: the 03:15 wake pushes the readings up to 03:00."""
    fleet = Fleet(soak_config(uwsgi_server, tmp_path, units=1, days=2, faults=0.0,
                              lose_state_rate=0, swap_rate=0, drain=False, nickname_updates=[]))
    assert fleet.run().passed
    server_dir = uwsgi_server.remote_data / fleet.units[0].hw_id / READINGS_DIR
    last = sorted(server_dir.iterdir())[-1].read_bytes().splitlines()[-1].split(b"\t")
    assert last[2] == b"2026-01-03" and last[3].startswith(b"03:00:")
