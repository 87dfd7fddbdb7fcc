"""/fleet and /fleet/<id> on the real server under uWSGI, checked in headless Chromium; the
gateway devices' rows and pages through Flask's test client."""

from __future__ import annotations

import re
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fleet_fixtures import (
    ALIVE,
    DEVICE_STATUS,
    LAB,
    LATE,
    NEVER,
    PULL_ALIVE,
    PULL_NEW,
    SILENT,
    STATUS_OF,
    TCP_ALIVE,
    TCP_SILENT,
    UNKNOWN,
    build_devices,
    build_fleet,
    text,
)
from toolchain_fixtures import reading

from co2unit_server.server.fleet_pages import size_text
from co2unit_server.simulator.launcher import ServerProcess

from conftest import chromium

ERROR_LOG = ("----- 2026-11-01 03:10:00 INFO  transmitting\n"
             "----- 2026-11-01 03:12:00 EXC   Uncaught exception\n"
             "Traceback (most recent call last):\n"
             "  File \"<script>alert(1)</script>\", line 1\n")


class _Dom(HTMLParser):
    """Rows of the table with id `table_id`: (data-status, cell texts)."""

    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id = table_id
        self.rows: list[tuple[str | None, list[str]]] = []
        self.tags: set[str] = set()
        self._in_table = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag == "table":
            self._in_table = attrs.get("id") == self.table_id
        elif self._in_table and tag == "tr":
            self.rows.append((attrs.get("data-status"), []))
        elif self._in_table and tag == "td":
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.rows[-1][1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._in_table = False


def rows_of(html: str, table_id: str) -> list[tuple[str | None, list[str]]]:
    dom = _Dom(table_id)
    dom.feed(html)
    return [row for row in dom.rows if row[1]]


def browse(tmp_path: Path, *args: str) -> str:
    """Chromium's stdout; fails on any message the page wrote to the console (JS errors too)."""
    done = chromium(tmp_path, "--enable-logging=stderr", "--v=0", *args)
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    return done.stdout


def push(server: ServerProcess, path: str, data: bytes, chunk: int = 4096) -> None:
    """Push a whole file in chunks, as a unit does."""
    for offset in range(0, len(data), chunk):
        reply = server.request("PUT", f"/ou/{ALIVE}/push-sequential/{path}?offset={offset}",
                               data[offset:offset + chunk])
        assert reply.status == 200, reply.body


def readings_file(now: float, hours: int = 72) -> bytes:
    lines = []
    for h in range(hours, 0, -1):
        date, clock = text(now - h * 3600).split(" ")
        co2 = "\t".join([str(450 + (h * 7) % 90)] * 10)
        lines.append(reading(ALIVE, "varanger-01", date, clock, f"{h % 12 - 3}.5", "0", co2))
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def fleet_server(uwsgi_server) -> ServerProcess:
    """The real server with the fleet of fleet_fixtures; the alive unit pushed data."""
    now = time.time()
    build_fleet(uwsgi_server.var_dir / "db.sqlite3", now)
    push(uwsgi_server, "data/readings/readings-0000.tsv", readings_file(now))
    push(uwsgi_server, "errors/errors-0000.txt", ERROR_LOG.encode())
    return uwsgi_server


def test_fleet_page_in_chromium(fleet_server, tmp_path):
    reply = fleet_server.request("GET", "/fleet")
    assert reply.status == 200 and reply.headers["refresh"] == "60"
    assert b"name=viewport" in reply.body and b"<script src" not in reply.body
    dom = browse(tmp_path, "--dump-dom", f"{fleet_server.url}/fleet")
    rows = rows_of(dom, "fleet")
    assert {cells[0]: status for status, cells in rows} == STATUS_OF
    assert [cells[0] for _, cells in rows] == [SILENT, NEVER, LATE, UNKNOWN, ALIVE, LAB]
    assert [cells[1] for _, cells in rows] == [STATUS_OF[cells[0]] for _, cells in rows]
    alive = next(cells for _, cells in rows if cells[0] == ALIVE)
    assert alive[2:7] == ["2.0 h", "varanger-01", "vj_re_sn_1", "2", "deployed"]
    # The fixture's days plus what was pushed (2 more error entries).
    pushed = sum(f.stat().st_size for f in (fleet_server.remote_data / ALIVE).rglob("*-0*"))
    assert (alive[11], alive[12]) == (size_text(8_000 + 4_096 + pushed), "5")
    # Escaped: the nickname shows as text, no <b> element was made of it.
    assert "&lt;b&gt;varanger-03&lt;/b&gt;" in dom and "b" not in _tags(dom)
    assert ("6 units: 1 alive, 1 late, 2 silent, 1 never seen, 1 unknown; 4 deployed, "
            "3 need attention") in dom
    index = fleet_server.request("GET", "/")
    assert b"href='/fleet'" in index.body
    for name, size in (("fleet-phone.png", "390,844"), ("fleet-desktop.png", "1400,900")):
        shot = tmp_path / name
        browse(tmp_path, f"--screenshot={shot}", f"--window-size={size}",
               f"{fleet_server.url}/fleet")
        assert shot.stat().st_size > 10_000
        print(f"screenshot: {shot}")


def _tags(html: str) -> set[str]:
    dom = _Dom("")
    dom.feed(html)
    return dom.tags


def test_unit_page_in_chromium(fleet_server, tmp_path):
    dom = browse(tmp_path, "--dump-dom", f"{fleet_server.url}/fleet/{ALIVE}")
    assert f"<h1>{ALIVE} — varanger-01</h1>" in dom
    assert [cells[0] for _, cells in rows_of(dom, "deployments")] == ["varanger-01"] * 2
    assert len(rows_of(dom, "pings")) == 6
    assert [cells[1] for _, cells in rows_of(dom, "files")] == ["readings-0000.tsv",
                                                                "errors-0000.txt"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom and "Uncaught exception" in dom
    assert f"src=\"/fleet/{ALIVE}/co2.svg\"" in dom and "<svg class=\"plot\"" in dom
    facts = [cells[0] for _, cells in rows_of(dom, "status")]
    assert facts[0] == "alive" and facts[2].endswith("(2.0 h ago)")
    shot = tmp_path / "unit.png"
    browse(tmp_path, "--virtual-time-budget=20000", f"--screenshot={shot}",
           "--window-size=1000,2400", f"{fleet_server.url}/fleet/{ALIVE}")
    print(f"screenshot: {shot}")
    for hw_id in (LATE, NEVER, UNKNOWN):
        assert fleet_server.request("GET", f"/fleet/{hw_id}").status == 200
    assert fleet_server.request("GET", "/fleet/co2unit-000000000000").status == 404
    # Not a hardware ID: the name of no gateway device either.
    reply = fleet_server.request("GET", "/fleet/co2unit-XYZ")
    assert reply.status == 404 and reply.json()["error"] == "NOT_FOUND"


def test_co2_plot_is_cached_until_new_data_arrives(fleet_server):
    url = f"/fleet/{ALIVE}/co2.svg"
    first = fleet_server.request("GET", url)
    assert first.status == 200 and first.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in first.body and b"varanger-01" in first.body
    cache = fleet_server.var_dir / "cache" / "fleet"
    (cached,) = cache.glob(f"{ALIVE}-*.svg")
    mtime = cached.stat().st_mtime_ns
    again = fleet_server.request("GET", url)
    assert again.headers["etag"] == first.headers["etag"] and cached.stat().st_mtime_ns == mtime
    more = reading(ALIVE, "varanger-01", *text(time.time()).split(" ")) + "\n"
    size = (fleet_server.remote_data / ALIVE / "data/readings/readings-0000.tsv").stat().st_size
    reply = fleet_server.request(
        "PUT", f"/ou/{ALIVE}/push-sequential/data/readings/readings-0000.tsv?offset={size}",
        more.encode())
    assert reply.status == 200
    redrawn = fleet_server.request("GET", url)
    assert redrawn.status == 200 and redrawn.headers["etag"] != first.headers["etag"]
    assert [p.name for p in cache.glob(f"{ALIVE}-*.svg")] != [cached.name]
    assert len(list(cache.glob(f"{ALIVE}-*.svg"))) == 1
    assert fleet_server.request("GET", f"/fleet/{LATE}/co2.svg").status == 404


def test_sorting_by_a_header_click_and_the_plot_loads(fleet_server, tmp_path):
    # A same-origin harness (served from var/pub) clicks the fleet page's headers in a frame.
    pub = fleet_server.var_dir / "pub"
    pub.mkdir(parents=True, exist_ok=True)
    (pub / "harness.html").write_text(
        "<!doctype html><body><pre id=out></pre><img id=plot src='/fleet/" + ALIVE
        + "/co2.svg'><iframe id=f src='/fleet'></iframe><script>"
        "const f = document.getElementById('f');"
        "f.onload = () => { const d = f.contentDocument;"
        " const order = () => [...d.querySelectorAll('#fleet tbody tr')]"
        "   .map(r => r.cells[0].textContent).join(' ');"
        " const th = [...d.querySelectorAll('#fleet th')]; const out = [order()];"
        " th[0].click(); out.push(order()); th[0].click(); out.push(order());"
        " th[2].click(); out.push(order()); th[2].click(); out.push(order());"
        " const img = document.getElementById('plot');"
        " const done = () => { out.push(img.naturalWidth);"
        "   document.getElementById('out').textContent = out.join('\\n'); };"
        " if (img.complete) done(); else img.onload = img.onerror = done; };"
        "</script></body>")
    dom = browse(tmp_path, "--virtual-time-budget=20000", "--dump-dom",
                 f"{fleet_server.url}/data/co2/harness.html")
    lines = re.search(r"<pre id=\"out\">([^<]*)</pre>", dom).group(1).splitlines()
    initial, by_unit, by_unit_desc, by_ping, by_ping_desc, width = lines
    assert initial.split() == [SILENT, NEVER, LATE, UNKNOWN, ALIVE, LAB]
    assert by_unit.split() == sorted(STATUS_OF) and by_unit_desc.split() == sorted(
        STATUS_OF, reverse=True)
    # Time since the last ping, numerically; never pinged sorts as the oldest.
    assert by_ping.split() == [UNKNOWN, ALIVE, LATE, SILENT, LAB, NEVER]
    assert by_ping_desc.split() == [NEVER, LAB, SILENT, LATE, ALIVE, UNKNOWN]
    assert int(width) > 500  # the CO2 plot decoded


# --- the gateways' devices


@pytest.fixture
def devices_client(tmp_path):
    """A client of an app with the fleet and the gateway devices of fleet_fixtures."""
    from co2unit_server.core.config import load_config
    from co2unit_server.server.app import create_app

    config = load_config({}, remote_data_dir=tmp_path / "remote_data", var_dir=tmp_path / "var",
                         min_free_bytes=0, pull_devices_file=tmp_path / "devices.tsv")
    now = time.time()
    build_devices(build_fleet(config.db_path, now), config.pull_devices_file, now)
    return create_app(config).test_client()


def test_fleet_page_has_a_section_of_gateway_devices(devices_client):
    html = devices_client.get("/fleet").get_data(as_text=True)
    assert [cells[0] for _, cells in rows_of(html, "fleet")] == [
        SILENT, NEVER, LATE, UNKNOWN, ALIVE, LAB]  # the units' table as before
    rows = rows_of(html, "devices")
    assert {cells[0]: status for status, cells in rows} == DEVICE_STATUS
    assert [cells[1] for _, cells in rows] == [DEVICE_STATUS[cells[0]] for _, cells in rows]
    assert rows[0][1][0] == TCP_SILENT  # watched devices in trouble first
    tcp = next(cells for _, cells in rows if cells[0] == TCP_ALIVE)
    assert tcp[2:] == ["1.0 h", "tcp", "1.0 h",
                       "humidity 54.997 · light 1234 · temperature 21.501", "3", "1"]
    pull = next(cells for _, cells in rows if cells[0] == PULL_ALIVE)
    assert pull[3:5] == ["pull", "1 min"] and pull[5].startswith("dht22.humidity 47.3")
    assert ("9 gateway devices: 2 alive, 1 late, 2 silent, 3 never seen, 1 unknown; "
            "5 need attention") in html
    assert f"<a href='/fleet/{TCP_ALIVE}'>" in html


def test_a_gateway_device_page(devices_client):
    resp = devices_client.get(f"/fleet/{TCP_ALIVE}")
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    html = resp.get_data(as_text=True)
    assert f"<h1>{TCP_ALIVE} (tcp device)</h1>" in html
    facts = [cells[0] for _, cells in rows_of(html, "status")]
    assert facts[0] == "alive" and facts[1] == "tcp" and facts[2] == "1.0 h"
    assert [cells[:2] for _, cells in rows_of(html, "values")] == [
        ["humidity", "54.997"], ["light", "1234"], ["temperature", "21.501"]]
    assert [cells[1] for _, cells in rows_of(html, "receipts")] == ["ok", "bad", "ok"]
    assert f"/api/units/{TCP_ALIVE}/measurements?format=csv" in html
    never = devices_client.get(f"/fleet/{PULL_NEW}").get_data(as_text=True)
    assert "Nothing received yet." in never and "No values stored yet." in never
    assert devices_client.get("/fleet/esp8266-99").status_code == 404
    assert devices_client.get("/fleet/bad%20name").get_json()["error"] == "BAD_DEVICE_ID"
