"""What the gateway simulators share: argument types, run dirs, reading back, the verdict."""

from __future__ import annotations

import argparse
import sqlite3
from collections import Counter

import pytest

from co2unit_server.simulator import common
from co2unit_server.simulator.common import (
    RunVerification,
    counts_text,
    duration,
    integer,
    percentile,
    positive,
    read_db,
    run_dir,
    share,
    until_stored,
    verdict_lines,
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(exit_on_error=False)
    p.add_argument("--port", type=integer(1, 65535))
    p.add_argument("--rate", type=positive(1000))
    p.add_argument("--seconds", type=duration)
    p.add_argument("--faults", type=share)
    return p


def test_argument_types_take_their_range_and_bounds():
    args = parser().parse_args(["--port", "65535", "--rate", "1000", "--seconds", "0.5",
                                "--faults", "0"])
    assert (args.port, args.rate, args.seconds, args.faults) == (65535, 1000.0, 0.5, 0.0)
    assert parser().parse_args(["--port", "1", "--faults", "1"]).faults == 1.0


@pytest.mark.parametrize("option, raw, why", [
    ("--port", "0", "must be 1-65535, got 0"),
    ("--port", "1.5", "invalid .* value: '1.5'"),
    ("--rate", "0", "must be above 0 and at most 1000, got 0"),
    ("--seconds", "86401", "must be above 0 and at most 86400, got 86401"),
    ("--seconds", "-1", "must be above 0"),
    ("--faults", "1.1", "must be between 0 and 1, got 1.1"),
])
def test_argument_types_refuse_what_is_out_of_range(option, raw, why):
    with pytest.raises(argparse.ArgumentError, match=why):
        parser().parse_args([option, raw])


def test_run_dir_keeps_the_given_one_and_removes_a_temporary_one(tmp_path):
    with run_dir(tmp_path / "keep" / "here", "simulate-x-") as base:
        (base / "file").write_text("x")
    assert (tmp_path / "keep" / "here" / "file").exists()
    with run_dir(None, "simulate-x-") as base:
        assert base.name.startswith("simulate-x-") and base.is_dir()
    assert not base.exists()


def test_read_db_runs_the_check_or_says_why_it_could_not(tmp_path):
    db_path = tmp_path / "db.sqlite3"
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE t (x)")
    seen: list[object] = []
    problems: list[str] = []
    read_db(db_path, problems, lambda conn: seen.append(conn.execute("SELECT 1").fetchone()))
    assert (seen, problems) == ([(1,)], [])
    read_db(db_path, problems, lambda conn: conn.execute("SELECT * FROM missing"))
    read_db(tmp_path / "none" / "db.sqlite3", problems, seen.append)
    assert problems[0].startswith(f"cannot read {db_path}: no such table")
    assert problems[1].startswith(f"cannot open {tmp_path / 'none' / 'db.sqlite3'}")
    assert len(seen) == 1  # no check without a database


def test_until_stored_verifies_again_until_it_passes(monkeypatch):
    monkeypatch.setattr(common, "RETRY_S", 0.0)
    outcomes = iter([["not yet"], ["not yet"], []])
    calls = Counter()

    def verify() -> RunVerification:
        calls["verify"] += 1
        return RunVerification(next(outcomes))

    assert until_stored(verify).problems == [] and calls["verify"] == 3
    # Settled (no wait can help) or out of time: the first result, problems and all.
    assert until_stored(lambda: RunVerification(["lost"]), lambda: True).problems == ["lost"]
    assert until_stored(lambda: RunVerification(["lost"]), wait_s=0).problems == ["lost"]


def test_figures_and_verdict_of_a_summary():
    assert percentile([], 0.5) == 0.0
    assert [percentile([3.0, 1.0, 2.0, 4.0], q) for q in (0.0, 0.5, 0.99, 1.0)] == [
        1.0, 3.0, 4.0, 4.0]
    assert counts_text(Counter({"ok": 3, "bad": 1, None: 2, 1001: 1})) == (
        "1001 1, None 2, bad 1, ok 3")
    assert counts_text({}) == ""
    assert verdict_lines([], True) == ["PASS"]
    assert verdict_lines(["a", "b", "c"], False, shown=2) == [
        "problem: a", "problem: b", "... and 1 more problems", "FAIL (3 problems)"]
    # Passed is the caller's to say: no problem found, yet the gateway exited badly.
    assert verdict_lines([], False) == ["FAIL (0 problems)"]
