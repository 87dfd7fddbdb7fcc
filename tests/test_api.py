"""The JSON API (/api/units, /api/units/<hw_id>[/readings], /api/pings) and the push statistics."""

from __future__ import annotations

import csv
import io
import json
import re
import time

import pytest
from fleet_fixtures import ALIVE, LATE, NEVER, STATUS_OF, UNKNOWN, build_fleet, ping
from toolchain_fixtures import reading

from co2unit_server.records.pinglog import INSERT_PING
from co2unit_server.records.push_stats import error_entries, last_reading
from co2unit_server.records.pushstore import Stored
from co2unit_server.toolchain.importer.readings import INSERT, parse_lines
from co2unit_server.toolchain.importer.report import StageReport

ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{6})?Z")
READINGS = [reading(ALIVE, "varanger-01", f"2026-11-0{d}", "12:00:00", "4.5", "1",
                    "\t".join(["400"] * 9 + ["200010"])) for d in range(1, 6)]


@pytest.fixture
def fleet_db(config):
    conn = build_fleet(config.db_path, time.time())
    rows = parse_lines("".join(line + "\n" for line in READINGS), 1, 1, StageReport("readings"))
    conn.executemany(INSERT, rows)
    return conn


def error_of(resp) -> str:
    assert resp.mimetype == "application/json", resp.data
    return resp.get_json()["error"]


def test_units_lists_every_unit_problems_first(client, fleet_db):
    resp = client.get("/api/units")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    units = resp.get_json()["units"]
    assert {u["hw_id"]: u["status"] for u in units} == STATUS_OF
    assert units[0]["status"] == "silent" and units[-1]["hw_id"] == "co2unit-fffffffffff6"
    alive = next(u for u in units if u["hw_id"] == ALIVE)
    assert {"hw_id", "nickname", "site", "tier", "status", "last_ping", "last_push", "rssi_dbm",
            "updates"} <= set(alive)
    assert (alive["nickname"], alive["site"], alive["tier"], alive["rssi_dbm"]) == \
        ("varanger-01", "vj_re_sn_1", 2, -75)
    assert ISO_Z.fullmatch(alive["last_ping"]) and ISO_Z.fullmatch(alive["last_push"])
    assert alive["updates"] == []
    never = next(u for u in units if u["hw_id"] == NEVER)
    assert never["last_ping"] is None and never["last_push"] is None


def test_unit_with_its_history(client, fleet_db, config):
    update = config.remote_data_dir / ALIVE / "updates" / "update-2026-11-01a" / "flash"
    update.mkdir(parents=True)
    (update / "main.py").write_text("print()")
    errors = config.remote_data_dir / ALIVE / "errors"
    errors.mkdir(parents=True)
    (errors / "errors-0000.txt").write_text("----- 2026-11-01 03:10:00 INFO  transmitting\n")
    body = client.get(f"/api/units/{ALIVE}").get_json()
    assert body["status"] == "alive"
    assert [(d["status"], ISO_Z.fullmatch(d["start_ts"]) is not None) for d in
            body["deployments"]] == [("lab_check", True), ("deployed", True)]
    assert body["deployments"][-1]["end_ts"] is None
    assert len(body["pings"]) == 6 and all(ISO_Z.fullmatch(p["time"]) for p in body["pings"])
    assert body["pings"][0]["rssi_dbm"] == -75
    assert [(f["directory"], f["name"], f["size"]) for f in body["files"]] == [
        ("errors", "errors-0000.txt", 45)]
    (u,) = body["updates"]
    assert (u["name"], u["state"], u["files"], u["files_sent"], u["delivered"]) == \
        ("update-2026-11-01a", "published", 1, 0, None)
    assert ISO_Z.fullmatch(u["published"])
    assert client.get(f"/api/units/{UNKNOWN}").get_json()["deployments"] == []


def test_readings_as_json_and_csv(client, fleet_db):
    resp = client.get(f"/api/units/{ALIVE}/readings?from=2026-11-02&to=2026-11-04T12:00:00Z")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    rows = resp.get_json()
    assert [r["time"] for r in rows] == ["2026-11-02T12:00:00Z", "2026-11-03T12:00:00Z"]
    assert rows[0]["co2_mean"] == 400.0  # 200010 left out
    assert rows[0]["unit_id"] == ALIVE and "site" in rows[0]
    resp = client.get(f"/api/units/{ALIVE}/readings?format=csv")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    table = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
    assert len(table) == 5 and table[0]["time"] == "2026-11-01T12:00:00Z"
    assert client.get(f"/api/units/{LATE}/readings").get_json() == []


@pytest.mark.parametrize("url,code", [
    # Not a hardware ID, and not even a device name.
    ("/api/units/co2unit%20XYZ", "BAD_DEVICE_ID"),
    ("/api/units/unit!", "BAD_DEVICE_ID"),
    ("/fleet/caf%C3%A9", "BAD_DEVICE_ID"),
    ("/api/units/co2unit-XYZ/readings", "BAD_HW_ID"),
    ("/fleet/co2unit-XYZ/co2.svg", "BAD_HW_ID"),
    (f"/api/units/{ALIVE}/readings?format=xml", "BAD_QUERY"),
    (f"/api/units/{ALIVE}/readings?from=yesterday", "BAD_QUERY"),
    (f"/api/units/{ALIVE}/readings?to=2026-13-01", "BAD_QUERY"),
    (f"/api/units/{ALIVE}/readings?from=2026-11-05&to=2026-11-01", "BAD_QUERY"),
    ("/api/pings?limit=0", "BAD_QUERY"),
    ("/api/pings?limit=1001", "BAD_QUERY"),
    ("/api/pings?limit=ten", "BAD_QUERY"),
    ("/api/pings?limit=-5", "BAD_QUERY"),
    ("/api/pings?since=last-week", "BAD_QUERY"),
    ("/api/pings?cursor=garbage", "BAD_QUERY"),
    ("/api/pings?cursor=WzEsMl0", "BAD_QUERY"),  # [1,2]: the right shape, the wrong types
    ("/api/pings?cursor=", "BAD_QUERY"),
])
def test_bad_requests_get_400_in_the_json_error_format(client, fleet_db, url, code):
    resp = client.get(url)
    assert resp.status_code == 400
    assert error_of(resp) == code and resp.get_json()["message"]


@pytest.mark.parametrize("url", ["/api/units/co2unit-000000000000",
                                 "/api/units/co2unit-000000000000/readings",
                                 "/fleet/co2unit-000000000000",
                                 # a device name (no hardware ID): no such gateway device
                                 "/api/units/co2unit-XYZ", "/api/units/co2unit-30aea42a50bc0",
                                 "/fleet/co2unit-XYZ", "/api/units/esp8266-99/measurements"])
def test_a_unit_never_seen_is_404(client, fleet_db, url):
    resp = client.get(url)
    assert resp.status_code == 404 and error_of(resp) == "NOT_FOUND"


def test_pings_pages_with_an_opaque_cursor(client, fleet_db):
    base = time.time() - 3600
    # Five at the very same time: the cursor must not skip or repeat ties.
    tied = [ping(f"co2unit-00000000{i:04x}", 0.5, base, -70) for i in range(5)]
    fleet_db.executemany(INSERT_PING, tied)
    tie_ts = tied[0][0]
    fleet_db.executemany(INSERT_PING, [ping(ALIVE, i / 100, time.time(), -60)
                                       for i in range(1, 240)])
    total = fleet_db.execute("SELECT count(*) FROM pings").fetchone()[0]
    seen, pages, url = [], 0, "/api/pings?limit=100"
    while url and pages < 10:
        body = client.get(url).get_json()
        seen += body["pings"]
        pages += 1
        url = body["next"] and f"/api/pings?limit=100&cursor={body['next']}"
    assert len(seen) == total and pages == -(-total // 100)
    keys = [(p["time"], p["hw_id"]) for p in seen]
    assert len(set(keys)) == total and [k[0] for k in keys] == sorted(k[0] for k in keys)
    assert all(ISO_Z.fullmatch(p["time"]) for p in seen)
    assert set(seen[0]) == {"time", "hw_id", "nickname", "rssi_raw", "rssi_dbm", "ber_raw"}
    ties, url = [], "/api/pings?limit=2&since=" + tie_ts
    for _ in range(3):
        body = client.get(url).get_json()
        ties += body["pings"]
        url = f"/api/pings?limit=2&cursor={body['next']}"
    assert [p["time"] for p in ties[:5]] == [tie_ts + "Z"] * 5
    assert len({p["hw_id"] for p in ties[:5]}) == 5 and ties[5]["hw_id"] == ALIVE
    recent = client.get("/api/pings?since=" + seen[-1]["time"]).get_json()
    assert recent == {"pings": [seen[-1]], "next": None}
    assert len(client.get("/api/pings").get_json()["pings"]) == 100  # the default limit


# --- push statistics


def push(client, path: str, offset: int, data: bytes):
    resp = client.put(f"/ou/{ALIVE}/push-sequential/{path}?offset={offset}", data=data)
    assert resp.status_code == 200, resp.data
    return resp


def push_daily(client, config) -> tuple:
    assert client.application.extensions["co2unit"].push_stats.flush()
    from co2unit_server.database import db

    conn = db.connect(config.db_path)
    return conn.execute("SELECT bytes, chunks, error_entries, last_push_ts, last_reading_ts "
                        "FROM push_daily WHERE unit_id = ?", (ALIVE,)).fetchone()


def test_real_pushes_are_counted(client, config):
    lines = "".join(line + "\n" for line in READINGS).encode()
    cut = len(lines) - 30  # the second chunk completes the last line
    push(client, "data/readings/readings-0000.tsv", 0, lines[:cut])
    bytes_, chunks, errors, last_push, newest = push_daily(client, config)
    assert (bytes_, chunks, errors, newest) == (cut, 1, 0, "2026-11-04 12:00:00")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", last_push)
    push(client, "data/readings/readings-0000.tsv", cut, lines[cut:])
    push(client, "data/readings/readings-0000.tsv", 0, lines[:cut])  # re-sent: adds nothing
    assert push_daily(client, config)[:3] + push_daily(client, config)[4:] == \
        (len(lines), 3, 0, "2026-11-05 12:00:00")
    log = (b"----- 2026-11-01 03:10:00 INFO  transmitting\n"
           b"----- (2026, 11, 1, 3, 11, 24, 4, 298) EXC   Uncaught exception\nTraceback\n"
           b"  text ----- not a headline\n----- 2026-11-01 03:12:00 WARN  watchdog\n")
    split = log.index(b"----- 2026-11-01 03:12") + 3  # a headline cut inside its marker
    push(client, "errors/errors-0000.txt", 0, log[:split])
    push(client, "errors/errors-0000.txt", split, log[split:])
    push(client, "errors/errors-0000.txt", 0, log)  # re-sent whole
    bytes_, chunks, errors, _, newest = push_daily(client, config)
    assert (bytes_, chunks, errors) == (len(lines) + len(log), 6, 3)
    assert newest == "2026-11-05 12:00:00"  # error logs leave it alone


@pytest.mark.parametrize("before,new,expected", [
    (b"", b"----- a\n----- b\n", 2),  # a file's start is a line start
    (b"xx\n---", b"-- a\nx ----- y\n", 1),  # completes a headline begun in the stored bytes
    (b"\n----- a", b"\n", 0),  # counted when its own chunk came
    (b"abcdef", b"----- x\n", 0),  # not at a line start
    (b"", b"", 0),
])
def test_error_entries_are_counted_once_across_chunks(tmp_path, before, new, expected):
    path = tmp_path / "errors-0000.txt"
    path.write_bytes(before + new)
    assert error_entries(Stored(str(path), len(before), new)) == expected


@pytest.mark.parametrize("chunk,expected", [
    (("\n".join(READINGS) + "\n").encode(), "2026-11-05 12:00:00"),
    (("\n".join(READINGS) + "\n\n\n" + READINGS[0][:40]).encode(), "2026-11-05 12:00:00"),
    ((READINGS[0] + "\n" + READINGS[1].replace("2026-11-02", "1970-01-01") + "\n").encode(),
     "2026-11-01 12:00:00"),
    (READINGS[0].encode(), None),  # no complete line
    ((READINGS[0] + "\n\n\n\n\n").encode(), None),  # only 4 lines are tried
    (b"garbage\n", None),
])
def test_last_reading_of_a_chunk(chunk, expected):
    assert last_reading(chunk) == expected


def test_units_and_readings_over_the_real_server(uwsgi_server):
    build_fleet(uwsgi_server.var_dir / "db.sqlite3", time.time())
    reply = uwsgi_server.request("GET", "/api/units")
    assert reply.status == 200 and len(json.loads(reply.body)["units"]) == len(STATUS_OF)
    reply = uwsgi_server.request("GET", f"/api/units/{ALIVE}/readings?format=csv")
    assert reply.status == 200 and reply.body.decode().startswith("time,unit_id,nickname,")
    reply = uwsgi_server.request("GET", "/api/pings?limit=5000")
    assert reply.status == 400 and json.loads(reply.body)["error"] == "BAD_QUERY"


# --- the gateways' devices


@pytest.fixture
def gateway_client(tmp_path):
    """A client of an app whose database holds the fleet and the gateway devices."""
    from fleet_fixtures import build_devices

    from co2unit_server.core.config import load_config
    from co2unit_server.server.app import create_app

    config = load_config({}, remote_data_dir=tmp_path / "remote_data", var_dir=tmp_path / "var",
                         min_free_bytes=0, pull_devices_file=tmp_path / "devices.tsv")
    conn = build_fleet(config.db_path, time.time())
    build_devices(conn, config.pull_devices_file, time.time())
    return create_app(config).test_client()


def test_units_lists_the_gateway_devices_with_their_family(gateway_client):
    from fleet_fixtures import DEVICE_STATUS, PULL_ALIVE, TCP_ALIVE

    units = gateway_client.get("/api/units").get_json()["units"]
    assert {u["id"]: u["status"] for u in units} == {**STATUS_OF, **DEVICE_STATUS}
    assert {u["family"] for u in units} == {"co2unit", "tcp", "pull"}
    assert all(u["hw_id"] == u["id"] for u in units if u["family"] == "co2unit")
    # The units first (as before), then the devices, problems first.
    assert [u["family"] for u in units[:len(STATUS_OF)]] == ["co2unit"] * len(STATUS_OF)
    tcp = next(u for u in units if u["id"] == TCP_ALIVE)
    assert (tcp["status"], tcp["interval_s"], tcp["received_7d"], tcp["refused_7d"],
            tcp["watched"]) == ("alive", 3600.0, 3, 1, True)
    assert ISO_Z.fullmatch(tcp["last_data"]) and ISO_Z.fullmatch(tcp["last_received"])
    assert set(tcp["values"]) == {"light", "humidity", "temperature"}
    assert tcp["values"]["light"]["value"] == 1234.0
    assert ISO_Z.fullmatch(tcp["values"]["light"]["time"])
    pull = next(u for u in units if u["id"] == PULL_ALIVE)
    assert (pull["interval_s"], pull["values"]["mq135.co2"]["value"]) == (60.0, 410.0)


def test_a_gateway_device_with_its_receipts(gateway_client):
    from fleet_fixtures import PULL_NEW, TCP_ALIVE

    body = gateway_client.get(f"/api/units/{TCP_ALIVE}").get_json()
    assert (body["id"], body["family"], body["status"]) == (TCP_ALIVE, "tcp", "alive")
    assert [r["verdict"] for r in body["receipts"]] == ["ok", "bad", "ok"]
    assert body["receipts"][0]["source"] == "tcp/esp8266-1/0000.log:2"
    assert body["receipts"][0]["detail"] is None and body["receipts"][0]["stored"] == 3
    assert all(ISO_Z.fullmatch(r["time"]) for r in body["receipts"])
    listed = gateway_client.get(f"/api/units/{PULL_NEW}").get_json()
    assert (listed["status"], listed["receipts"], listed["values"]) == ("never seen", [], {})


def test_measurements_as_json_and_csv(gateway_client):
    from fleet_fixtures import PULL_ALIVE, PULL_NEW, TCP_ALIVE

    resp = gateway_client.get(f"/api/units/{TCP_ALIVE}/measurements")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    rows = resp.get_json()
    assert len(rows) == 6 and set(rows[0]) == {"time", "device", "name", "value"}
    assert [r["time"] for r in rows] == sorted(r["time"] for r in rows)
    assert all(ISO_Z.fullmatch(r["time"]) and r["device"] == TCP_ALIVE for r in rows)
    newest = rows[-1]["time"]
    resp = gateway_client.get(f"/api/units/{TCP_ALIVE}/measurements?format=csv&from={newest}"
                              "&name=light&name=humidity,temperature")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    table = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
    assert [(r["name"], float(r["value"])) for r in table] == [
        ("humidity", 54.997), ("light", 1234.0), ("temperature", 21.501)]
    resp = gateway_client.get(f"/api/units/{TCP_ALIVE}/measurements?to={newest}&name=light")
    assert [r["value"] for r in resp.get_json()] == [1200.0]
    pull = gateway_client.get(f"/api/units/{PULL_ALIVE}/measurements?name=mq135.co2").get_json()
    assert [r["value"] for r in pull] == [399.0, 402.08, 410.0]
    assert gateway_client.get(f"/api/units/{PULL_NEW}/measurements").get_json() == []


@pytest.mark.parametrize("query", ["format=xml", "from=yesterday", "to=2026-13-01",
                                   "from=2026-11-05&to=2026-11-01", "name=", "name=,,"])
def test_bad_measurement_queries_get_400(gateway_client, query):
    resp = gateway_client.get(f"/api/units/esp8266-1/measurements?{query}")
    assert resp.status_code == 400
    assert error_of(resp) == "BAD_QUERY" and resp.get_json()["message"]


def test_measurements_of_a_co2_unit_point_to_its_readings(gateway_client):
    resp = gateway_client.get(f"/api/units/{ALIVE}/measurements")
    assert resp.status_code == 404 and f"/api/units/{ALIVE}/readings" in resp.get_json()[
        "message"]
    resp = gateway_client.get("/api/units/bad%20id/measurements")
    assert resp.status_code == 400 and error_of(resp) == "BAD_DEVICE_ID"
