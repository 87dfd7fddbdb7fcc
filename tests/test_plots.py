"""The tiered CO2 and ping plots: produced for every edge case, grouped and binned correctly."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from toolchain_fixtures import (
    HW_A,
    HW_B,
    HW_C,
    HW_D,
    HW_E,
    OTHER_SITE,
    SITE,
    Tree,
    build_tree,
    import_tree,
    open_db,
    reading,
    write,
)

from co2unit_server.database import plotdata
from co2unit_server.database.plotdata import Period, to_epoch
from co2unit_server.toolchain import plots

DAY = 86400


@pytest.fixture
def tree(tmp_path) -> Tree:
    tree = build_tree(tmp_path)
    import_tree(tree)
    tree.pub_dir.mkdir(parents=True)
    return tree


@pytest.fixture
def conn(tree: Tree):
    conn = open_db(tree)
    yield conn
    conn.close()


def _svg_ok(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    root = ET.fromstring(text)  # well-formed XML
    assert root.tag.endswith("svg")
    assert path.stat().st_size < 2_000_000
    return text


OPTS = plots.PlotOptions(xmax=to_epoch("2026-11-08 00:00:00"))


def test_every_plot_is_produced_for_the_edge_cases(tree, conn):
    """One reading (C), never deployed (C), no end (B, D), every value None (D), en route."""
    for name in plotdata.PLOT_OUTPUTS:
        plots.make_plot(conn, name, tree.pub_dir, OPTS, now=to_epoch("2026-11-08 00:00:00"))
        text = _svg_ok(tree.pub_dir / name)
        assert "UTC" in text
    text = (tree.pub_dir / plotdata.CO2_ALL).read_text()
    for label in (SITE, f"{OTHER_SITE} (2)", "varanger-03", HW_C):
        assert label in text
    assert not list(tree.pub_dir.glob(".*.tmp"))  # written by rename


def test_plots_with_no_data_at_all(tmp_path):
    tree = Tree(tmp_path)
    conn = open_db(tree)
    tree.pub_dir.mkdir(parents=True)
    for name in plotdata.PLOT_OUTPUTS:
        plots.make_plot(conn, name, tree.pub_dir, plots.PlotOptions())
        text = _svg_ok(tree.pub_dir / name)
        assert "No readings" in text or "No pings" in text


def test_groups_ordered_by_tier_sharing_and_splitting_subplots(conn):
    groups = plotdata.groups(plotdata.periods(conn), plotdata.reading_units(conn))
    labels = [g.label for g in groups]
    assert labels == [SITE, OTHER_SITE, f"{OTHER_SITE} (2)", "varanger-03", HW_C]
    assert [g.tier for g in groups] == [3, 2, 2, 1, None]
    # Consecutive, non-overlapping deployments at one site share a subplot...
    assert [p.unit_id for p in groups[0].periods] == [HW_A, HW_B]
    # ...overlapping ones do not.
    assert {groups[1].periods[0].unit_id, groups[2].periods[0].unit_id} == {HW_D, HW_E}
    assert [p.status for p in groups[3].periods] == ["en_route", "lab_check"]
    assert groups[4].periods == [Period(HW_C)]
    only = plotdata.groups(plotdata.periods(conn), plotdata.reading_units(conn), 2, 2)
    assert [g.tier for g in only] == [2, 2]


def test_a_reading_on_the_first_day_of_a_deployment_belongs_to_it(conn):
    period = next(p for p in plotdata.periods(conn) if p.unit_id == HW_B)
    assert period.start == to_epoch("2026-11-05 00:00:00")
    lo, hi = period.clip(to_epoch("2026-11-01 00:00:00"), to_epoch("2026-11-08 00:00:00"))
    rows = plotdata.co2_bins(conn, HW_B, lo, hi, lo, 60)
    temps = sorted(r[3] / r[4] for r in rows)
    assert temps == [3.5, 4.0]  # 11-05 00:00:10 in, 11-04 23:59:10 (3.0) out


def test_glitches_and_fault_temperature_never_reach_a_plot(conn):
    lo, hi = to_epoch("2026-11-01 13:00:00"), to_epoch("2026-11-01 15:00:00")
    x, co2, temp = plots._series(plotdata.co2_bins(conn, HW_A, lo, hi, lo, 1800), lo, 1800)
    values = dict(zip(np.round(x * DAY - lo).astype(int) // 1800, co2, strict=True))
    assert values[2] == 800.0  # 14:00: 0 and 200010 left out of the mean
    assert np.nanmax(co2) < 1000 and np.nanmin(co2) > 600
    assert 85.0 not in temp
    assert np.isnan(temp[3])  # 14:30 has only the 85.0 fault value


@pytest.mark.parametrize("width", [60.0, 3 * 3600.0 * 2])
def test_wide_bins_from_co2_bins_match_the_raw_readings(conn, width):
    lo, hi = to_epoch("2026-10-30 01:30:00"), to_epoch("2026-11-07 02:00:00")
    t0, width = plotdata.bin_grid(lo, hi, int((hi - lo) / width))
    raw = plotdata._raw(conn, HW_A, lo, hi, t0, width)
    merged = plotdata.co2_bins(conn, HW_A, lo, hi, t0, width)
    assert np.allclose(plots._series(raw, t0, width)[1], plots._series(merged, t0, width)[1],
                       equal_nan=True)


def test_the_recent_plot_reads_only_its_window(conn, tree, monkeypatch):
    asked: list[tuple[float, float]] = []
    real = plotdata.co2_bins

    def spy(conn, unit, lo, hi, t0, width):
        asked.append((lo, hi))
        return real(conn, unit, lo, hi, t0, width)

    monkeypatch.setattr(plotdata, "co2_bins", spy)
    opts = plots.PlotOptions(xmax=to_epoch("2026-11-08 00:00:00"), recent_days=3)
    plots.make_plot(conn, plotdata.CO2_RECENT, tree.pub_dir, opts)
    assert asked and min(lo for lo, _ in asked) >= to_epoch("2026-11-05 00:00:00")
    assert max(hi for _, hi in asked) <= to_epoch("2026-11-08 00:00:00")
    plan = " ".join(r[3] for r in conn.execute(
        "EXPLAIN QUERY PLAN " + plotdata._RAW_SQL, (0, 1, HW_A, "a", "b", "c", "d")))
    assert "SEARCH co2_readings USING COVERING INDEX co2_readings_key" in plan or \
        "SEARCH co2_readings USING INDEX co2_readings_key" in plan


def test_svg_size_does_not_grow_with_the_number_of_readings(tmp_path):
    tree = Tree(tmp_path)
    lines = [reading(HW_A, "n", f"2026-{1 + d // 28:02d}-{1 + d % 28:02d}",
                     f"{h // 2:02d}:{30 * (h % 2):02d}:10", f"{(h % 20) - 5}.5")
             for d in range(300) for h in range(48)]
    write(tree.readings(HW_A), "\n".join(lines) + "\n")
    import_tree(tree)
    conn = open_db(tree)
    tree.pub_dir.mkdir(parents=True)
    plots.make_plot(conn, plotdata.CO2_ALL, tree.pub_dir, plots.PlotOptions())
    text = _svg_ok(tree.pub_dir / plotdata.CO2_ALL)
    assert len(lines) == 14400
    steps = max(p.count("l") for p in re.findall(r' d="([^"]*)"', text))
    assert steps <= plots.BINS + 10  # binned: never one vertex per reading
    assert len(text) < 150_000


def test_co2_max_and_tier_options(conn):
    groups = plotdata.groups(plotdata.periods(conn), plotdata.reading_units(conn))
    lo, hi = to_epoch("2026-10-30 00:00:00"), to_epoch("2026-11-08 00:00:00")
    fig = plots.co2_figure(conn, groups, lo, hi, "t", plots.PlotOptions(co2_max=5000))
    assert fig.axes[0].get_ylim() == (0.0, 5000.0)
    fig = plots.co2_figure(conn, groups[:1], lo, hi, "t", plots.PlotOptions())
    assert 700 < fig.axes[0].get_ylim()[1] < 1000  # from the data, glitches left out


def test_compact_path_keeps_every_vertex():
    data = "M 10.04 20.06 \nL 11.0 19.5 \nL 12.55 -3.0 \nz \nM 1 1 \nL 2 2 \n"
    compact = plots.compact_path(data)
    assert compact == "M10 20.1l1-.6l1.6-22.5zM1 1l1 1"
    assert plots.compact_path("M 0 0 C 1 1 2 2 3 3") == "M 0 0 C 1 1 2 2 3 3"


def test_plots_with_deployments_but_no_readings_or_pings(tmp_path):
    tree = Tree(tmp_path)
    write(tree.deployments, "unit_id\tnickname\tsite\ttier\tstatus\tstart_ts\tend_ts\tnote\n"
          f"{HW_A}\tn\t{SITE}\t1\tdeployed\t2026-01-01\t\t\n")
    import_tree(tree)
    conn = open_db(tree)
    tree.pub_dir.mkdir(parents=True)
    for name in plotdata.PLOT_OUTPUTS:
        plots.make_plot(conn, name, tree.pub_dir, plots.PlotOptions())
        _svg_ok(tree.pub_dir / name)
    assert "No pings yet" in (tree.pub_dir / plotdata.PINGS_ALL).read_text()
    assert "No readings" in (tree.pub_dir / plotdata.CO2_ALL).read_text()
