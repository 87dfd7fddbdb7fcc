"""The measurement store: rows reach the tables once, whichever path writes them first."""

from __future__ import annotations

import json
import sqlite3

import pytest
from fleet_fixtures import NOW, PULL_ALIVE, PULL_GONE, TCP_ALIVE, TCP_BAD, build_devices, ts_at

from co2unit_server import db, db_writer, measurement_store
from co2unit_server.measurement_store import Measurement, Receipt, open_store
from co2unit_server.toolchain.export import TEXTS
from co2unit_server.toolchain.research_tables import ResearchError


def test_values_and_receipts_are_stored_once(config):
    store = open_store(config)
    receipt = Receipt("tcp/esp8266-1/0000.log:1", "esp8266-1", "tcp",
                      "2026-12-06T01:00:00.000000", "ok", 2, 3600.0, "")
    values = [Measurement("esp8266-1", "tcp", "2026-12-06T00:58:00.000000", "light", 1234.0,
                          receipt.source),
              Measurement("esp8266-1", "tcp", "2026-12-06T00:58:00.000000", "humidity", 54.997,
                          receipt.source)]
    store.add(receipt, values)
    store.add(receipt, values)  # the importer's copy of the same line
    assert store.flush(10)
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


def test_a_batch_longer_than_one_insert_is_stored_whole(config, monkeypatch):
    monkeypatch.setattr(measurement_store, "ROWS_PER_INSERT", 4)
    store = open_store(config)
    for n in range(3):  # 3 receipts of 5 values: statements of 4, 4, 4 and 3 rows
        source = f"tcp/esp8266-1/0000.log:{n + 1}"
        store.add(Receipt(source, "esp8266-1", "tcp", f"2026-12-06T0{n}:00:00.000000", "ok", 5,
                          3600.0, ""),
                  [("esp8266-1", "tcp", f"2026-12-06T0{n}:00:00.000000", f"v{i}", float(i),
                    source, None) for i in range(5)])
    assert store.flush(10)
    with sqlite3.connect(config.db_path) as conn:
        assert conn.execute("SELECT count(*), sum(value) FROM measurements").fetchone() == (
            15, 30.0)
        assert conn.execute("SELECT count(*) FROM gateway_receipts").fetchone() == (3,)


def _receipt(n: int) -> tuple[Receipt, list[tuple]]:
    source = f"ws/lab-1/0000.log:{n}"
    ts = f"2026-12-06T01:00:{n:02d}.000000"
    return (Receipt(source, "lab-1", "ws", ts, "ok", 1, None, f"seq {n}"),
            [("lab-1", "ws", ts, "co2", 400.0 + n, source, None)])


def test_rows_queued_while_a_transaction_runs_gather_for_the_next(config, monkeypatch):
    batches: list[int] = []
    real_write = measurement_store._ReceiptWriter._write

    def counting_write(self, conn, batch):
        batches.append(len(batch))
        real_write(self, conn, batch)

    monkeypatch.setattr(measurement_store._ReceiptWriter, "_write", counting_write)
    store = open_store(config)
    store.add(*_receipt(1))
    assert store.flush(10)
    # The writer now lingers (linger_s) before its next transaction: these two share it.
    store.add_many([_receipt(2)])
    store.add_many([_receipt(3), _receipt(4)])
    assert store.flush(10)
    assert batches == [1, 3]
    with sqlite3.connect(config.db_path) as conn:
        assert conn.execute("SELECT count(*), sum(value) FROM measurements").fetchone() == (
            4, 1610.0)


def test_transactions_are_bounded_by_rows_and_a_writer_behind_does_not_linger(
        config, monkeypatch):
    events: list[object] = []
    real_write = measurement_store._ReceiptWriter._write
    monkeypatch.setattr(measurement_store._ReceiptWriter, "_write",
                        lambda self, conn, batch: (events.append(len(batch)),
                                                   real_write(self, conn, batch)))
    monkeypatch.setattr(db_writer.time, "sleep", lambda s: events.append(f"sleep {s:g}"))
    monkeypatch.setattr(measurement_store, "ROWS_PER_TRANSACTION", 10)
    store = open_store(config)
    store.add_many([_receipt(n) for n in range(12)])  # a receipt and a value each: 2 rows
    assert store.flush(30)
    # No sleep between the full transactions (the one after the last may follow the flush).
    assert events[:3] == [5, 5, 2]
    with sqlite3.connect(config.db_path) as conn:
        assert conn.execute("SELECT count(*) FROM measurements").fetchone() == (12,)


def test_the_writer_keeps_a_page_cache_for_a_fleet(config):
    writer = measurement_store._ReceiptWriter(config.db_path, 1000, db.INSERT_RECEIPT, "r", "")
    conn = writer._connection()
    assert conn.execute("PRAGMA cache_size").fetchone() == (-writer.cache_kib,)
    assert writer.cache_kib >= 32 * 1024
    writer._close()


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
