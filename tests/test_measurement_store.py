"""The measurement store: rows reach the tables once, whichever path writes them first."""

from __future__ import annotations

import sqlite3

from co2unit_server.measurement_store import Measurement, Receipt, open_store


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
