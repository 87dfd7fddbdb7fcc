"""Data quality per unit: rows imported and dropped, days with data, gaps, and the summary line."""

from __future__ import annotations

import sqlite3

import pytest
from toolchain_fixtures import (
    A_DROPPED,
    A_IMPORTED,
    HW_A,
    HW_B,
    HW_C,
    HW_D,
    Tree,
    append,
    build_tree,
    import_tree,
    open_db,
    reading,
    write,
)

from co2unit_server.cli import main
from co2unit_server.core.timestamps import DAY
from co2unit_server.database.plotdata import to_epoch
from co2unit_server.toolchain import quality

NOW = to_epoch("2026-11-08 00:00:00")
HW_F = "co2unit-ffffffffffff"


def _refresh(tree: Tree, conn: sqlite3.Connection, now: float = NOW) -> dict:
    reports = import_tree(tree, conn)
    quality.update(conn, reports, now)
    return {q.unit_id: q for q in quality.load(conn)}


@pytest.fixture
def tree(tmp_path) -> Tree:
    return build_tree(tmp_path)


@pytest.fixture
def conn(tree):
    conn = open_db(tree)
    yield conn
    conn.close()


def test_every_pushing_unit_has_a_row_with_its_losses_by_reason(tree, conn):
    write(tree.data_dir / HW_F / "errors" / "errors-0000.txt",
          "----- 2026-11-01 03:10:00 INFO  transmitting\n")
    rows = _refresh(tree, conn)
    assert sorted(rows) == sorted([HW_A, HW_B, HW_C, HW_D, HW_F])  # E pushed nothing
    a = rows[HW_A]
    assert a.rows_imported == A_IMPORTED + 1  # + the row only its superseded copy has
    assert a.dropped_by_reason == A_DROPPED and a.rows_dropped == sum(A_DROPPED.values())
    assert a.lost_share == pytest.approx(a.rows_dropped / (a.rows_imported + a.rows_dropped))
    assert (a.first_reading, a.last_reading) == ("2026-10-31 12:00:10", "2026-11-01 18:25:10")
    f = rows[HW_F]  # pushed only an error log: listed, with nothing imported
    assert (f.rows_imported, f.rows_dropped, f.first_reading, f.lost_share) == (0, 0, None, 0.0)
    # The same figures are in the database for researchers.
    assert conn.execute("SELECT rows_imported, rows_dropped FROM data_quality WHERE unit_id = ?",
                        (HW_A,)).fetchone() == (a.rows_imported, a.rows_dropped)
    assert dict(conn.execute("SELECT reason, rows FROM dropped_by_unit WHERE unit_id = ?",
                             (HW_A,)).fetchall()) == A_DROPPED


def test_a_unit_whose_every_row_is_dropped_shows_a_total_loss(tree, conn):
    write(tree.readings(HW_F), "".join(
        reading(HW_F, "n", "2026-11-02", f"0{h}:00:10", raw="1\t2") + "\n" for h in range(4)))
    f = _refresh(tree, conn)[HW_F]
    assert (f.rows_imported, f.rows_dropped, f.lost_share) == (0, 4, 1.0)
    assert f.dropped_by_reason == {"wrong field count": 4}


def test_days_and_the_longest_gap_count_within_the_deployed_period(tree, conn):
    times = ["2026-11-01 00:00:10", "2026-11-01 12:00:10", "2026-11-02 12:00:10",
             "2026-11-04 12:00:10"]  # silent from the 2nd noon to the 4th noon
    write(tree.readings(HW_F), "".join(reading(HW_F, "n", *t.split()) + "\n" for t in times)
          + reading(HW_F, "n", "2026-11-06", "00:00:10") + "\n")  # after the deployment
    append(tree.deployments, f"{HW_F}\tn\tsite_f\t1\tdeployed\t2026-11-01\t2026-11-05\t\n")
    f = _refresh(tree, conn)[HW_F]
    assert f.days_deployed == pytest.approx(4.0)
    assert f.days_with_data == 3  # the 1st, 2nd and 4th; the 6th is outside
    assert f.longest_gap_days == pytest.approx(2.0)
    assert (f.gap_from, f.gap_to) == ("2026-11-02 12:00:10", "2026-11-04 12:00:10")


def test_a_silent_unit_s_gap_runs_to_now_while_it_is_deployed(tree, conn):
    write(tree.readings(HW_F), reading(HW_F, "n", "2026-11-01", "06:00:00") + "\n")
    append(tree.deployments, f"{HW_F}\tn\tsite_f\t1\tdeployed\t2026-11-01\t\t\n")
    f = _refresh(tree, conn)[HW_F]
    assert f.days_deployed == pytest.approx(7.0)
    assert f.longest_gap_days == pytest.approx(7.0 - 0.25)
    assert f.gap_to == "2026-11-08 00:00:00"


def test_a_never_deployed_unit_counts_between_its_first_and_last_reading(tree, conn):
    c = _refresh(tree, conn)[HW_C]
    assert (c.days_deployed, c.days_with_data, c.longest_gap_days) == (None, 1, None)


def test_only_changed_units_are_recomputed_within_a_day(tree, conn):
    _refresh(tree, conn, NOW)
    append(tree.readings(HW_B), reading(HW_B, "varanger-04", "2026-11-07", "12:00:10") + "\n")
    rows = _refresh(tree, conn, NOW + 60)
    assert rows[HW_B].computed_at == "2026-11-08 00:01:00"
    assert rows[HW_A].computed_at == "2026-11-08 00:00:00"
    assert rows[HW_B].rows_imported == 4
    rows = _refresh(tree, conn, NOW + DAY)  # a new day: everything moves on
    assert {q.computed_at for q in rows.values()} == {"2026-11-09 00:00:00"}


def test_the_summary_line_names_every_unit_that_lost_rows(tree, capsys):
    assert main(["import", "--data-dir", str(tree.data_dir), "--db-dir", str(tree.db_dir)]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    lost = sum(A_DROPPED.values())
    assert line.startswith(f"data quality: 1 of 4 units lost rows (1 over 1.0%): {HW_A} {lost} "
                           f"of {lost + A_IMPORTED + 1} ({lost / (lost + A_IMPORTED + 1):.1%}); "
                           "4 units updated in ")


def test_the_warning_share_comes_from_the_settings(tree, capsys, monkeypatch):
    monkeypatch.setenv("CO2UNIT_LOSS_WARN_SHARE", "0.5")
    assert main(["import", "--data-dir", str(tree.data_dir), "--db-dir", str(tree.db_dir)]) == 0
    assert "(0 over 50.0%)" in capsys.readouterr().out.splitlines()[-1]
