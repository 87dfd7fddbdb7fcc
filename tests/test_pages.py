"""Admin pages: the index, recent pings, and the generated pages in var/pub/."""

from __future__ import annotations

import re

import pytest

from conftest import HW_ID, OTHER_HW_ID


def ping(client, hw_id, nick):
    assert client.post(f"/ou/{hw_id}/alive?site_code={nick}&rssi_dbm=-80").status_code == 200


def test_index_links_the_status_pages(client):
    resp = client.get("/")
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    for href in ("/status/alive/recent", "/status/alive/summary", "/data/co2/summary"):
        assert f"href='{href}'".encode() in resp.data


def test_recent_pings_newest_first_with_now_line_stripped(client):
    ping(client, HW_ID, "first")
    ping(client, OTHER_HW_ID, "second")
    resp = client.get("/status/alive/recent")
    assert resp.mimetype == "text/plain"
    lines = resp.get_data(as_text=True).splitlines()
    assert lines[0].endswith("\t(now)")
    assert lines[1].split("\t")[1:3] == ["0123456789ab", "second"]
    assert lines[2].split("\t")[1:3] == ["30aea42a50bc", "first"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", line.split("\t")[0])
               for line in lines)
    assert "co2unit-" not in resp.get_data(as_text=True)
    assert "Refresh" not in resp.headers


def test_recent_pings_ascending_and_refresh(client):
    ping(client, HW_ID, "first")
    ping(client, OTHER_HW_ID, "second")
    resp = client.get("/status/alive/recent?asc=true&refresh=30")
    lines = resp.get_data(as_text=True).splitlines()
    assert [line.split("\t")[2] for line in lines[:2]] == ["first", "second"]
    assert lines[-1].endswith("(now)")
    assert resp.headers["Refresh"] == "30"


def test_recent_pings_shows_only_the_configured_count(client):
    for i in range(25):
        ping(client, HW_ID, f"n{i}")
    lines = client.get("/status/alive/recent").get_data(as_text=True).splitlines()
    assert len(lines) == 21 and lines[1].split("\t")[2] == "n24"


@pytest.mark.parametrize("query", ["refresh=soon", "refresh=0", "asc=maybe"])
def test_recent_pings_bad_query(client, query):
    assert client.get(f"/status/alive/recent?{query}").status_code == 400


@pytest.mark.parametrize("url", ["/status/alive/summary", "/data/co2/summary",
                                 "/status/alive/pings_all_tiered.svg",
                                 "/data/co2/co2_tiered_all_hires.svg"])
def test_not_generated_yet_says_how(client, url):
    resp = client.get(url)
    assert resp.status_code == 404 and resp.mimetype == "text/html"
    assert b"make-summaries.sh" in resp.data


@pytest.mark.parametrize("url,name,refresh", [
    ("/status/alive/summary", "pings_summary.html", 600),
    ("/status/alive/pings_all_tiered.svg", "pings_all_tiered.svg", 600),
    ("/data/co2/summary", "co2_summary.html", 3600),
    ("/data/co2/co2_tiered_recent_hires.svg", "co2_tiered_recent_hires.svg", 3600),
])
def test_generated_pages_are_served_with_refresh_and_cache_lifetime(client, config, url, name,
                                                                    refresh):
    config.pub_dir.mkdir(parents=True, exist_ok=True)
    (config.pub_dir / name).write_bytes(b"<svg/>" if name.endswith(".svg") else b"<p>hi</p>")
    resp = client.get(url)
    assert resp.status_code == 200
    assert resp.headers["Refresh"] == str(refresh)
    assert resp.headers["Cache-Control"] == f"public, max-age={refresh}"
    assert resp.mimetype == ("image/svg+xml" if name.endswith(".svg") else "text/html")


@pytest.mark.parametrize("url", ["/data/co2/..%2Fdb.sqlite3", "/data/co2/.hidden",
                                 "/status/alive/%2e%2e"])
def test_pub_files_cannot_escape(client, config, url):
    config.pub_dir.mkdir(parents=True, exist_ok=True)
    (config.pub_dir / ".hidden").write_text("secret")
    assert client.get(url).status_code == 404
