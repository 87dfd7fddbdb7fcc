"""The summary pages: content, ordering, escaping, and rendering in headless Chromium."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from toolchain_fixtures import (
    A_DROPPED,
    A_IMPORTED,
    HW_A,
    HW_B,
    HW_C,
    HW_D,
    HW_E,
    Tree,
    build_tree,
    import_tree,
    open_db,
    write,
)

from co2unit_server.cli import main
from co2unit_server.database.plotdata import to_epoch
from co2unit_server.toolchain import quality, summaries

from conftest import chromium

NOW = to_epoch("2026-11-08 00:00:00")


class _Collect(HTMLParser):
    """Rows of the first table and every img src of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.images: list[str] = []
        self.external: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr":
            self.rows.append([])
        elif tag == "td":
            self._cell = []
        elif tag == "img":
            self.images.append(attrs["src"])
        if tag in ("script", "link") or any(str(v).startswith(("http:", "https:", "//"))
                                            for v in attrs.values()):
            self.external.append(tag)

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None


def _parse(html: str) -> _Collect:
    parser = _Collect()
    parser.feed(html)
    return parser


@pytest.fixture
def tree(tmp_path) -> Tree:
    tree = build_tree(tmp_path)
    # A nickname that must be escaped, pinged after the others.
    with open(tree.db_dir / "pings" / "pings-0000.tsv", "a") as f:
        f.write(f"2026-11-07T03:00:00.000000\t{HW_C}\t<b>x</b>&\t5\t-103\t99\n")
    import_tree(tree)
    return tree


def test_pings_summary_one_row_per_unit_deployed_first(tree):
    conn = open_db(tree)
    rows = summaries.unit_summaries(conn, NOW)
    assert [r.hw_id for r in rows] == [HW_B, HW_D, HW_E, HW_A, HW_C]
    assert [r.deployed for r in rows] == [True, True, True, False, False]
    b = rows[0]
    assert (b.site, b.nickname, b.last_ping, b.last_dbm) == \
        ("vj_re_sn_4", "varanger-04", "2026-11-06 03:11:00", -73)
    assert b.last_ping_deployed == "2026-11-06 03:11:00"
    assert b.days_deployed == pytest.approx(3.0)
    assert (b.days_with_ping, b.min_dbm, b.mean_dbm, b.max_dbm) == (1, -73, -73.0, -73)
    d = rows[1]
    assert (d.days_with_ping, d.last_dbm, d.days_deployed) == (1, -95, pytest.approx(7.0))
    # A is back in the lab: listed after the deployed units, with its last deployment's figures.
    assert (rows[3].deployed, rows[3].days_deployed, rows[3].days_with_ping) == (False, 6.0, 1)
    assert rows[4].days_deployed is None  # C was never deployed


def test_pings_page_escapes_values_and_is_self_contained(tree):
    summaries.make_page(open_db(tree), summaries.PINGS_SUMMARY, _pub(tree), NOW, 14, 0.01)
    html = (tree.pub_dir / summaries.PINGS_SUMMARY).read_text(encoding="utf-8")
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;&amp;" in html
    page = _parse(html)
    assert not page.external
    assert len([r for r in page.rows if r]) == 5
    assert page.rows[1][:3] == [HW_B, "varanger-04", "vj_re_sn_4"]
    assert page.images == ["pings_all_tiered.svg"]


def test_co2_page_shows_both_plots_by_bare_name_and_the_last_import(tree):
    summaries.make_page(open_db(tree), summaries.CO2_SUMMARY, _pub(tree), NOW, 7, 0.01)
    html = (tree.pub_dir / summaries.CO2_SUMMARY).read_text(encoding="utf-8")
    assert "<h2>Last 7 days</h2>" in html
    page = _parse(html)
    assert page.images == ["co2_tiered_recent_hires.svg", "co2_tiered_all_hires.svg"]
    assert not page.external
    assert ["readings", "dropped", "date before 2011 (clock not set)", "2"] in page.rows


def test_co2_page_has_a_data_quality_row_per_unit_with_lossy_units_marked(tree):
    conn = open_db(tree)
    quality.update(conn, import_tree(tree, conn), NOW)
    for share, lossy in ((0.01, 1), (0.5, 0)):
        summaries.make_page(conn, summaries.CO2_SUMMARY, _pub(tree), NOW, 7, share)
        html = (tree.pub_dir / summaries.CO2_SUMMARY).read_text(encoding="utf-8")
        assert html.count("<tr class=lossy>") == lossy
        assert ("<p class=alert>1 unit lost more than 1.0% of their readings rows in the "
                f"import: {HW_A}." in html) == bool(lossy)
    assert "<h2 id=quality>Data quality</h2>" in html
    rows = {row[0]: row for row in _parse(html).rows if row and row[0].startswith("co2unit-")}
    assert sorted(rows) == sorted([HW_A, HW_B, HW_C, HW_D])  # every unit that pushed data
    lost = sum(A_DROPPED.values())
    assert rows[HW_A][1:4] == [str(A_IMPORTED + 1), str(lost),
                               f"{lost / (lost + A_IMPORTED + 1):.1%}"]
    assert "wrong field count: 2" in rows[HW_A][4]
    assert rows[HW_B][2:5] == ["0", "0.0%", "–"]


def test_pages_with_no_units(tmp_path):
    tree = Tree(tmp_path)
    conn = open_db(tree)
    for name in summaries.OUTPUTS:
        summaries.make_page(conn, name, _pub(tree), NOW, 14, 0.01)
        assert "<html" in (tree.pub_dir / name).read_text()
    assert "No units yet" in (tree.pub_dir / summaries.PINGS_SUMMARY).read_text()


def _pub(tree: Tree) -> Path:
    tree.pub_dir.mkdir(parents=True, exist_ok=True)
    return tree.pub_dir


def test_generated_pages_render_in_headless_chromium(uwsgi_server, tmp_path):
    """Pages built by the toolchain, served by the real server, open in a browser."""
    tree = build_tree(tmp_path)  # the server's remote_data and var dirs
    assert tree.db_dir == uwsgi_server.var_dir
    reply = uwsgi_server.request("POST", f"/ou/{HW_A}/alive?site_code=varanger-03&rssi_raw=12"
                                 "&rssi_dbm=-89&ber_raw=99")
    assert reply.status == 200
    assert main(["build", "--data-dir", str(tree.data_dir), "--db-dir", str(tree.db_dir),
                 "--pub-dir", str(tree.pub_dir), "--xmax", "2026-11-08"]) == 0
    pings_dom = chromium(tmp_path, "--dump-dom", f"{uwsgi_server.url}/status/alive/summary")
    page = _parse(pings_dom.stdout)
    hw_ids = [row[0] for row in page.rows if row]
    assert sorted(hw_ids) == sorted([HW_A, HW_B, HW_C, HW_D, HW_E])
    a_row = next(row for row in page.rows if row and row[0] == HW_A)
    assert a_row[4] == "-89"  # the live ping, once
    co2_dom = chromium(tmp_path, "--dump-dom", f"{uwsgi_server.url}/data/co2/summary")
    quality_rows = [row[0] for row in _parse(co2_dom.stdout).rows
                    if row and row[0].startswith("co2unit-")]
    assert sorted(quality_rows) == sorted([HW_A, HW_B, HW_C, HW_D])
    assert co2_dom.stdout.count('<tr class="lossy">') == 1  # A lost most of its rows
    images = _parse(co2_dom.stdout).images + page.images
    assert set(images) == {"co2_tiered_recent_hires.svg", "co2_tiered_all_hires.svg",
                           "pings_all_tiered.svg"}
    for prefix, names in (("/data/co2/", images[:2]), ("/status/alive/", images[2:])):
        for name in names:
            reply = uwsgi_server.request("GET", prefix + name)
            assert reply.status == 200
            assert reply.headers["content-type"].startswith("image/svg+xml")
    # The images decode: a harness page reads their natural size once loaded.
    harness = write(tmp_path / "harness.html", "<!doctype html><body><pre id=out></pre>" + "".join(
        f"<img src='{uwsgi_server.url}/data/co2/{n}'>" for n in images[:2]) +
        "<script>window.onload=()=>{document.getElementById('out').textContent=[...document."
        "images].map(i=>i.naturalWidth+'x'+i.naturalHeight).join(' ')}</script>")
    sizes = chromium(tmp_path, "--virtual-time-budget=20000", "--dump-dom", harness.as_uri())
    found = re.search(r"<pre id=\"out\">([^<]*)</pre>", sizes.stdout).group(1).split()
    assert len(found) == 2 and all(int(s.split("x")[0]) > 500 for s in found), found
    shot = tmp_path / "co2.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,1600",
             f"{uwsgi_server.url}/data/co2/summary")
    assert shot.stat().st_size > 20_000  # plots drawn, not a blank page
