"""The measurement store: rows reach the tables once, whichever path writes them first."""

from __future__ import annotations

import json
import sqlite3

import pytest
from fleet_fixtures import NOW, PULL_ALIVE, PULL_GONE, TCP_ALIVE, TCP_BAD, build_devices, ts_at

from co2unit_server.database import db, measurement_store
from co2unit_server.database.measurement_store import open_store
from co2unit_server.database.rows import Measurement, Receipt
from co2unit_server.database.tables import TEXTS, ResearchError


def test_values_and_receipts_are_stored_once(config):
    store = open_store(config)  # written by a child process: store_writer
    receipt = Receipt("tcp/esp8266-1/0000.log:1", "esp8266-1", "tcp",
                      "2026-12-06T01:00:00.000000", "ok", 2, 3600.0, "")
    values = [Measurement("esp8266-1", "tcp", "2026-12-06T00:58:00.000000", "light", 1234.0,
                          receipt.source),
              Measurement("esp8266-1", "tcp", "2026-12-06T00:58:00.000000", "humidity", 54.997,
                          receipt.source)]
    store.add(receipt, values)
    store.add(receipt, values)  # the importer's copy of the same line
    store.close()
    with sqlite3.connect(config.db_path) as conn:
        assert conn.execute("SELECT device, family, ts, name, value, source FROM measurements "
                            "ORDER BY name").fetchall() == [
            ("esp8266-1", "tcp", "2026-12-06T00:58:00.000000", "humidity", 54.997,
             "tcp/esp8266-1/0000.log:1"),
            ("esp8266-1", "tcp", "2026-12-06T00:58:00.000000", "light", 1234.0,
             "tcp/esp8266-1/0000.log:1")]
        assert conn.execute("SELECT source, verdict, stored, expected_s, detail "
                            "FROM gateway_receipts").fetchall() == [
            ("tcp/esp8266-1/0000.log:1", "ok", 2, 3600.0, None)]


# --- reading


@pytest.fixture
def conn(tmp_path):
    conn = db.connect(tmp_path / "db.sqlite3")
    db.init_schema(conn)
    build_devices(conn, tmp_path / "devices.tsv")
    yield conn
    conn.close()


def rows(conn, *args, **kwargs) -> list[tuple]:
    return [row for batch in measurement_store.measurement_batches(conn, *args, **kwargs)
            for row in batch]


def test_devices_of_each_table(conn):
    assert measurement_store.receipt_devices(conn) == {
        "esp8266-1": "tcp", "esp8266-2": "tcp", "esp8266-3": "tcp", "esp8266-4": "tcp",
        TCP_BAD: "tcp", PULL_ALIVE: "pull", "lab-2": "pull", PULL_GONE: "pull"}
    assert measurement_store.measurement_devices(conn) == [
        "esp8266-1", "esp8266-3", "esp8266-4", PULL_ALIVE, PULL_GONE]


def test_receipt_stats_count_a_window_and_find_the_newest(conn):
    since = ts_at(NOW, 7 * 24)
    stats = measurement_store.receipt_stats(conn, [PULL_ALIVE, TCP_BAD, "nothing"], since)
    assert set(stats) == {PULL_ALIVE, TCP_BAD}
    pull = stats[PULL_ALIVE]
    assert (pull.family, pull.received, pull.refused) == ("pull", 3, 1)
    assert (pull.last_received, pull.last_ok) == (ts_at(NOW, 0.5 / 60), ts_at(NOW, 0.5 / 60))
    bad = stats[TCP_BAD]
    assert (bad.received, bad.refused, bad.last_ok, bad.expected_s) == (1, 1, None, None)
    assert measurement_store.receipt_stats(conn, [TCP_ALIVE], since)[TCP_ALIVE].expected_s \
        == 3600.0


def test_query_by_device_time_and_names(conn):
    every = rows(conn)
    assert [r[1] for r in every] == sorted(r[1] for r in every)  # by device, then time
    assert len(every) == 13
    alive = rows(conn, TCP_ALIVE, ts_at(NOW, 1.5), None, ["light", "temperature"])
    assert alive == [(ts_at(NOW, 1.2) + "Z", TCP_ALIVE, "light", 1234.0),
                     (ts_at(NOW, 1.2) + "Z", TCP_ALIVE, "temperature", 21.501)]
    # start inclusive, end exclusive, to the microsecond
    at = ts_at(NOW, 1.2)
    assert [r[0] for r in rows(conn, TCP_ALIVE, at, None, "light")] == [at + "Z"]
    assert rows(conn, TCP_ALIVE, None, at, "light") == [(ts_at(NOW, 2.2) + "Z", TCP_ALIVE,
                                                         "light", 1200.0)]
    assert rows(conn, [PULL_ALIVE, PULL_GONE], names="bmp180.pressure") == [
        (ts_at(NOW, 48) + "Z", PULL_GONE, "bmp180.pressure", 1006.13)]
    assert rows(conn, "nothing") == [] and rows(conn, []) == [] and rows(conn, names=[]) == []


def test_query_as_csv_and_json_lines(conn):
    batches = measurement_store.measurement_batches(conn, TCP_ALIVE, names=["light"],
                                                    encoding="csv")
    text = "".join(TEXTS["csv"](measurement_store.MEASUREMENTS, batches))
    assert text == ("time,device,name,value\n"
                    f"{ts_at(NOW, 2.2)}Z,esp8266-1,light,1200.0\n"
                    f"{ts_at(NOW, 1.2)}Z,esp8266-1,light,1234.0\n")
    batches = measurement_store.measurement_batches(conn, PULL_GONE, encoding="json")
    assert json.loads("".join(TEXTS["json"](measurement_store.MEASUREMENTS, batches))) == [
        {"time": ts_at(NOW, 48) + "Z", "device": PULL_GONE, "name": "bmp180.pressure",
         "value": 1006.13}]


@pytest.mark.parametrize("kwargs,message", [
    ({"start": "yesterday"}, "cannot read 'yesterday' as a time"),
    ({"start": "2026-11-05", "end": "2026-11-01"}, "is after"),
    ({"names": [""]}, "names must be one name or a list"),
    ({"devices": [1]}, "devices must be one name or a list"),
    ({"devices": 5}, "devices must be one name or a list"),
])
def test_bad_arguments_are_research_errors_before_any_batch(conn, kwargs, message):
    with pytest.raises(ResearchError, match=message):
        measurement_store.measurement_batches(conn, **kwargs)


def test_an_older_database_without_the_table_says_so(tmp_path):
    old = sqlite3.connect(tmp_path / "old.sqlite3")
    with pytest.raises(ResearchError, match="has no measurements table"):
        measurement_store.measurement_batches(old)
