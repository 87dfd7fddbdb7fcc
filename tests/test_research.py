"""co2unit_server.research: the readings and pings tables as pandas DataFrames."""

from __future__ import annotations

import functools
import re
import sqlite3
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from toolchain_fixtures import (
    HW_A,
    HW_B,
    HW_C,
    HW_D,
    RAW_VALUES,
    SITE,
)

from co2unit_server import research
from co2unit_server.database import aggregates, db, research_tables, tables

UNIT = "co2unit-aaaaaaaaaaaa"
OTHER = "co2unit-bbbbbbbbbbbb"
CO2 = tuple(f"co2_{i:02d}" for i in range(1, 11))
COLUMNS = ["unit_id", "nickname", "temp", "flash_count", *CO2, "co2_mean", *db.RAW_COLUMNS,
           "deployment_nickname", "site", "tier", "status"]


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    """An empty database of the current schema at tmp_path/db.sqlite3."""
    c = db.connect(tmp_path / "db.sqlite3")
    db.init_schema(c)
    yield c
    c.close()


def add_reading(conn: sqlite3.Connection, ts: str, unit: str = UNIT, co2=(700,) * 10,
                temp: float | None = 4.5, raw=(None,) * 5, nickname: str | None = "nick") -> None:
    """Insert one reading at ts ('YYYY-MM-DD HH:MM:SS', UTC)."""
    date, time = ts.split(" ")
    line = conn.execute("SELECT count(*) FROM co2_readings").fetchone()[0] + 1
    conn.execute(f"INSERT INTO co2_readings (unit_id, nickname, date, time, temp, flash_count, "
                 f"{', '.join(CO2)}, src_file, src_line, {', '.join(db.RAW_COLUMNS)}) VALUES "
                 f"({', '.join('?' * 23)})", (unit, nickname, date, time, temp, 1, *co2, 1, line,
                                              *raw))


def add_deployment(conn: sqlite3.Connection, start: str | None, end: str | None, site: str,
                   unit: str = UNIT, tier: int | None = 1, status: str = "deployed") -> None:
    conn.execute("INSERT INTO deploy_durations_tiered VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                 (unit, f"{site}-nick", site, tier, status, start, end))


def add_ping(conn: sqlite3.Connection, ts: str, unit: str = UNIT, rssi=(18, -77, 99)) -> None:
    """Insert one ping at ts ('YYYY-MM-DDTHH:MM:SS.ffffff', UTC)."""
    conn.execute("INSERT INTO pings VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (ts, ts[:10], ts[11:], unit, "nick", *rssi))


def at(frame: pd.DataFrame, iso: str, unit: str | None = None) -> pd.Series:
    """The one row of `frame` at UTC time iso (of `unit`, if given)."""
    rows = frame.loc[[pd.Timestamp(iso, tz="UTC")]]
    if unit is not None:
        rows = rows[rows.unit_id == unit]
    assert len(rows) == 1
    return rows.iloc[0]


def test_readings_have_the_documented_columns_and_dtypes(tree_db):
    frame = research.readings(tree_db)
    assert list(frame.columns) == COLUMNS
    assert all(frame[c].dtype == "Int64" for c in ["flash_count", *CO2, *db.RAW_COLUMNS, "tier"])
    assert frame.temp.dtype == np.float64 and frame.co2_mean.dtype == np.float64
    assert all(frame[c].dtype == "str" for c in  # pandas' string dtype, missing as NaN
               ("unit_id", "nickname", "deployment_nickname", "site", "status"))


def test_readings_values_are_as_stored(tree_db):
    row = at(research.readings(tree_db, HW_A), "2026-11-01T13:00:10Z")
    assert (row.unit_id, row.nickname, row.temp, row.flash_count) == (HW_A, "varanger-03",
                                                                       23.4375, 1)
    assert [row[c] for c in CO2] == [680, 700, 710, 710, 700, 690, 700, 700, 700, 700]
    assert row.co2_mean == 699.0


def test_index_is_utc_and_named_time_sorted_by_unit_then_time(tree_db):
    frame = research.readings(tree_db)
    assert isinstance(frame.index, pd.DatetimeIndex) and frame.index.name == "time"
    assert str(frame.index.tz) == "UTC"
    assert frame.index[frame.unit_id == HW_B][0] == pd.Timestamp("2026-11-04 23:59:10", tz="UTC")
    assert list(frame.unit_id.unique()) == sorted(frame.unit_id.unique())
    assert all(frame[frame.unit_id == u].index.is_monotonic_increasing
               for u in frame.unit_id.unique())


def test_null_values_are_missing_not_zero(tree_db):
    frame = research.readings(tree_db)
    row = at(frame, "2026-11-01T13:30:10Z")  # temp and co2_01 None
    assert pd.isna(row.temp) and pd.isna(row.co2_01) and row.co2_02 == 700
    assert row.co2_mean == 700.0  # the other nine
    empty = frame[frame.unit_id == HW_D]  # every value None
    assert len(empty) == 3
    assert empty[["flash_count", *CO2, "co2_mean", "temp"]].isna().all().all()
    assert pd.isna(at(frame, "2026-11-01T15:00:10Z").nickname)  # DEFAULTNICK -> NULL


def test_fault_temperature_85_is_nan_and_others_kept(conn, tmp_path):
    add_reading(conn, "2026-11-01 10:00:00", temp=85.0)
    add_reading(conn, "2026-11-01 10:30:00", temp=84.9375)
    assert conn.execute("SELECT temp FROM co2_readings").fetchall() == [(85.0,), (84.9375,)]
    frame = research.readings(tmp_path)
    assert np.isnan(frame.temp.iloc[0]) and frame.temp.iloc[1] == 84.9375


def test_co2_mean_leaves_out_glitches_and_nulls(conn, tmp_path):
    add_reading(conn, "2026-11-01 10:00:00", co2=(0, 200010, None, 700, 710, 720, 730, 740, 750,
                                                  760))
    add_reading(conn, "2026-11-01 10:30:00", co2=(0, 200010, *(None,) * 8))
    add_reading(conn, "2026-11-01 11:00:00", co2=(401, 402, 403, 404, 405, 406, 407, 408, 409,
                                                  411))
    frame = research.readings(tmp_path)
    assert frame.co2_mean.iloc[0] == 5110 / 7  # the seven real values
    assert np.isnan(frame.co2_mean.iloc[1])
    assert frame.co2_mean.iloc[2] == 4056 / 10
    assert frame.co2_01.iloc[0] == 0 and frame.co2_02.iloc[0] == 200010  # kept as stored


def test_co2_mean_is_what_the_plots_bin(conn, tmp_path):
    values = [(0, 200010, 700, 705, 711, 699, 701, 702, 703, 704), (430,) * 10,
              (None, 450, 451, 452, 0, 453, 454, 455, 456, 457), (-5, 10, 20, 30, 40, 50, 60,
                                                                  70, 80, 200011)]
    for hour, co2 in zip((0, 3, 6, 9), values, strict=True):  # one reading per 3-hour bin
        add_reading(conn, f"2026-11-01 {hour:02d}:10:00", co2=co2)
    aggregates.update(conn)
    bins = [s / n for s, n in conn.execute("SELECT co2_sum, co2_n FROM co2_bins ORDER BY bucket")]
    assert research.readings(tmp_path).co2_mean.tolist() == bins


def test_raw_columns_old_rows_and_failed_reads_are_missing(tree_db):
    frame = research.readings(tree_db, HW_A)
    raw = list(db.RAW_COLUMNS)
    assert at(frame, "2026-11-01T18:20:10Z")[raw].tolist() == list(RAW_VALUES)
    assert at(frame, "2026-11-01T18:21:10Z")[raw].isna().all()  # read failed
    assert at(frame, "2026-11-01T13:00:10Z")[raw].isna().all()  # 16-field row


@pytest.fixture
def deployed(conn):
    """UNIT: P0 until 2026-10-01; P1 2026-11-01 -> 11-02; P2 from 11-01 12:00, never ended."""
    add_deployment(conn, None, "2026-10-01 00:00:00", "p0", tier=0)
    add_deployment(conn, "2026-11-01 00:00:00", "2026-11-02 00:00:00", "p1", tier=1)
    add_deployment(conn, "2026-11-01 12:00:00", None, "p2", tier=None, status="en_route")
    return conn


@pytest.mark.parametrize(("ts", "site"), [
    ("2020-01-01 00:00:00", "p0"),  # open start
    ("2026-09-30 23:59:59", "p0"),
    ("2026-10-01 00:00:00", None),  # exactly at an end: out
    ("2026-10-31 23:59:59", None),
    ("2026-11-01 00:00:00", "p1"),  # exactly at a start: in
    ("2026-11-01 11:59:59", "p1"),
    ("2026-11-01 12:00:00", "p2"),  # overlap: the one that started latest
    ("2026-11-01 23:59:59", "p2"),
    ("2026-11-02 00:00:00", "p2"),  # p1 ended, p2 goes on
    ("2030-01-01 00:00:00", "p2"),  # open end
])
def test_deployment_of_a_reading(deployed, tmp_path, ts, site):
    add_reading(deployed, ts)
    row = research.readings(tmp_path).iloc[0]
    if site is None:
        assert row[["deployment_nickname", "site", "tier", "status"]].isna().all()
    else:
        tier = None if pd.isna(row.tier) else row.tier
        expected = {"p0": (0, "deployed"), "p1": (1, "deployed"), "p2": (None, "en_route")}
        assert (row.site, row.deployment_nickname) == (site, f"{site}-nick")
        assert (tier, row.status) == expected[site]


def test_deployment_ties_go_to_the_later_row_and_other_units_are_apart(conn, tmp_path):
    add_deployment(conn, "2026-11-01 00:00:00", None, "first")
    add_deployment(conn, "2026-11-01 00:00:00", None, "second")
    add_deployment(conn, None, None, "elsewhere", unit=OTHER)
    add_reading(conn, "2026-11-01 06:00:00")
    add_reading(conn, "2026-11-01 06:00:00", unit="co2unit-cccccccccccc")
    frame = research.readings(tmp_path)
    assert frame.site.iloc[0] == "second"
    assert pd.isna(frame.site.iloc[1])  # never deployed


def test_deployment_join_with_a_time_range_starting_inside_a_period(deployed, tmp_path):
    for ts in ("2026-11-01 06:00:00", "2026-11-01 11:00:00", "2026-11-01 13:00:00"):
        add_reading(deployed, ts)
    frame = research.readings(tmp_path, start="2026-11-01T10:00:00Z", end="2026-11-01T12:30Z")
    assert frame.site.tolist() == ["p1"]
    assert research.readings(tmp_path, start="2026-11-01T10:00").site.tolist() == ["p1", "p2"]


def test_time_range_start_inclusive_end_exclusive(conn, tmp_path):
    for ts in ("2026-11-01 10:00:00", "2026-11-01 10:30:00", "2026-11-01 11:00:00",
               "2026-11-02 00:00:00"):
        add_reading(conn, ts)
    times = [t.isoformat() for t in research.readings(
        tmp_path, start="2026-11-01T10:30:00", end="2026-11-01T11:00:00").index]
    assert times == ["2026-11-01T10:30:00+00:00"]
    assert len(research.readings(tmp_path, start="2026-11-01", end="2026-11-02")) == 3
    assert len(research.readings(tmp_path, start="2026-11-01T10:00:00.5")) == 3
    assert len(research.readings(tmp_path, end="2026-11-01T10:30:00.000001")) == 2


@pytest.mark.parametrize("start", [
    "2026-11-01T10:30:00Z", "2026-11-01T12:30:00+02:00", "2026-11-01 10:30",
    datetime(2026, 11, 1, 10, 30), pd.Timestamp("2026-11-01 11:30", tz="Europe/Berlin"),
])
def test_start_accepts_iso_text_datetime_and_timestamps_as_utc(conn, tmp_path, start):
    add_reading(conn, "2026-11-01 10:29:59")
    add_reading(conn, "2026-11-01 10:30:00")
    assert len(research.readings(tmp_path, start=start)) == 1


@pytest.mark.parametrize(("start", "end"), [("2026-13-01", None), ("yesterday", None),
                                            (None, 12), ("2026-11-02", "2026-11-01")])
def test_bad_time_range_is_a_research_error(conn, tmp_path, start, end):
    with pytest.raises(research.ResearchError):
        research.readings(tmp_path, start=start, end=end)


def test_units_filter_takes_one_several_or_all(tree_db):
    assert set(research.readings(tree_db, HW_B).unit_id) == {HW_B}
    assert set(research.readings(tree_db, [HW_C, HW_B]).unit_id) == {HW_B, HW_C}
    assert set(research.readings(tree_db, {HW_C}).unit_id) == {HW_C}
    assert set(research.readings(tree_db).unit_id) == {HW_A, HW_B, HW_C, HW_D}
    assert research.readings(tree_db, "co2unit-ffffffffffff").empty


def test_no_rows_keeps_the_columns_dtypes_and_utc_index(tree_db):
    frame = research.readings(tree_db, [])
    assert frame.empty and list(frame.columns) == COLUMNS
    assert str(frame.index.tz) == "UTC" and frame.index.name == "time"
    assert frame.co2_01.dtype == "Int64"


def test_many_batches_give_the_same_frame(tree_db, monkeypatch):
    whole = research.readings(tree_db)
    monkeypatch.setattr(research, "batches", functools.partial(research_tables.batches, size=2))
    pd.testing.assert_frame_equal(research.readings(tree_db), whole)


def test_pings_values_index_and_deployment(tree_db):
    frame = research.pings(tree_db)
    assert list(frame.columns) == ["unit_id", "nickname", "rssi_raw", "rssi_dbm", "ber_raw",
                                   "deployment_nickname", "site", "tier", "status"]
    assert str(frame.index.tz) == "UTC"
    row = at(frame, "2026-11-01T03:10:05.123456Z")
    assert (row.unit_id, row.rssi_raw, row.rssi_dbm, row.ber_raw) == (HW_A, 18, -77, 99)
    assert (row.site, row.tier) == (SITE, 3)
    old = at(frame, "2026-11-01T03:11:00Z")  # B: no signal values, before its deployment
    assert old[["nickname", "rssi_raw", "rssi_dbm", "ber_raw", "site"]].isna().all()
    assert at(frame, "2026-11-02T03:12:00.5Z").ber_raw is pd.NA


def test_pings_deployment_boundaries_and_range(conn, tmp_path):
    add_deployment(conn, "2026-11-01 00:00:00", "2026-11-02 00:00:00", "p1")
    for ts in ("2026-10-31T23:59:59.999999", "2026-11-01T00:00:00.000000",
               "2026-11-01T23:59:59.999999", "2026-11-02T00:00:00.000000"):
        add_ping(conn, ts)
    sites = research.pings(tmp_path).site
    assert sites.isna().tolist() == [True, False, False, True]  # at the end: out
    assert sites.dropna().tolist() == ["p1", "p1"]
    part = research.pings(tmp_path, start="2026-11-01", end="2026-11-01T23:59:59.999999")
    assert [t.isoformat() for t in part.index] == ["2026-11-01T00:00:00+00:00"]


def test_opens_the_database_read_only(conn, tmp_path):
    with tables.connection(tmp_path) as ro, pytest.raises(
            sqlite3.OperationalError, match="readonly"):
        ro.execute("DELETE FROM co2_readings")


def test_missing_database_is_a_named_error_with_the_path(tmp_path):
    with pytest.raises(research.DatabaseNotFoundError, match=re.escape(str(tmp_path))):
        research.readings(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.sqlite3"):
        research.pings(tmp_path / "nope.sqlite3")
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_not_a_co2unit_database_is_a_research_error(tmp_path):
    sqlite3.connect(tmp_path / "other.sqlite3").execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(research.ResearchError, match="not a co2unit database"):
        research.readings(tmp_path / "other.sqlite3")
    (tmp_path / "text.sqlite3").write_text("hello, not a database" * 50)
    with pytest.raises(research.ResearchError):
        research.readings(tmp_path / "text.sqlite3")


def test_takes_an_open_connection_and_leaves_it_open(conn):
    add_reading(conn, "2026-11-01 10:00:00")
    assert len(research.readings(conn)) == 1
    assert conn.execute("SELECT count(*) FROM co2_readings").fetchone() == (1,)


# --- measurements of the gateways' devices


def add_values(conn: sqlite3.Connection, device: str, family: str, ts: str,
               **values: float) -> None:
    """Insert the values of one packet or poll at ts ('YYYY-MM-DDTHH:MM:SS.ffffff', UTC)."""
    conn.executemany(db.INSERT_MEASUREMENT, [
        (device, family, ts, name.replace("__", "."), value, f"{family}/{device}/0000.log:1",
         None) for name, value in values.items()])


@pytest.fixture
def gateway_db(conn: sqlite3.Connection) -> sqlite3.Connection:
    add_values(conn, "esp8266-1", "tcp", "2026-11-01T00:58:00.000000", light=1234.0,
               humidity=54.997, temperature=21.501)
    add_values(conn, "esp8266-1", "tcp", "2026-11-01T01:18:00.500000", light=1244.0,
               humidity=55.096, temperature=21.544)
    add_values(conn, "lab-1", "pull", "2026-11-01T01:00:00.250000", mq135__co2=402.08,
               dht22__humidity=47.3)
    add_values(conn, "lab-1", "pull", "2026-11-01T01:01:00.000000", mq135__co2=410.0)  # partial
    return conn


def test_measurements_one_row_per_device_and_time_one_column_per_name(gateway_db, tmp_path):
    frame = research.measurements(tmp_path)
    assert list(frame.columns) == ["device", "dht22.humidity", "humidity", "light",
                                   "mq135.co2", "temperature"]
    assert frame.device.tolist() == ["esp8266-1"] * 2 + ["lab-1"] * 2  # by device, then time
    assert str(frame.index.tz) == "UTC" and frame.index.name == "time"
    assert frame.index.dtype == "datetime64[us, UTC]"
    assert frame.device.dtype == "str" and (frame.dtypes[1:] == "float64").all()
    row = at(frame, "2026-11-01T01:18:00.5Z")
    assert (row.device, row.light, row.humidity, row.temperature) == (
        "esp8266-1", 1244.0, 55.096, 21.544)
    assert np.isnan(row["mq135.co2"])  # another device's name
    partial = at(frame, "2026-11-01T01:01:00Z")
    assert partial["mq135.co2"] == 410.0 and np.isnan(partial["dht22.humidity"])


def test_measurements_by_device_names_and_time(gateway_db, tmp_path):
    one = research.measurements(tmp_path, "lab-1", names="mq135.co2")
    assert list(one.columns) == ["device", "mq135.co2"] and one["mq135.co2"].tolist() == [
        402.08, 410.0]
    both = research.measurements(tmp_path, ["lab-1", "esp8266-1"], names=["light", "mq135.co2"],
                                 start="2026-11-01T01:00:00.250000Z",
                                 end=pd.Timestamp("2026-11-01T01:18:00.5", tz="UTC"))
    assert [(t.isoformat(), d) for t, d in zip(both.index, both.device, strict=True)] == [
        ("2026-11-01T01:00:00.250000+00:00", "lab-1"), ("2026-11-01T01:01:00+00:00", "lab-1")]
    # Side by side, one column per device.
    wide = research.measurements(tmp_path, names="temperature").pivot(
        columns="device", values="temperature")
    assert list(wide.columns) == ["esp8266-1"] and len(wide) == 2


def test_measurements_none_found_keeps_the_device_column_and_utc_index(gateway_db, tmp_path):
    frame = research.measurements(tmp_path, "esp8266-99")
    assert frame.empty and list(frame.columns) == ["device"]
    assert research.measurements(tmp_path, []).empty
    assert list(research.measurements(tmp_path, names=[]).columns) == ["device"]
    assert str(frame.index.tz) == "UTC" and frame.index.name == "time"


def test_measurements_many_batches_give_the_same_frame(gateway_db, tmp_path, monkeypatch):
    whole = research.measurements(tmp_path)
    monkeypatch.setattr(research, "measurement_batches",
                        functools.partial(research.measurement_batches, size=1))
    pd.testing.assert_frame_equal(research.measurements(tmp_path), whole)


@pytest.mark.parametrize("kwargs", [{"start": "soon"}, {"names": [""]}, {"devices": 3},
                                    {"start": "2026-11-02", "end": "2026-11-01"}])
def test_measurements_bad_arguments_are_research_errors(gateway_db, tmp_path, kwargs):
    with pytest.raises(research.ResearchError):
        research.measurements(tmp_path, **kwargs)


def test_measurements_of_a_database_from_before_the_gateways(tmp_path):
    old = sqlite3.connect(tmp_path / "old.sqlite3")
    old.execute("CREATE TABLE pings (x)")
    old.close()
    with pytest.raises(research.ResearchError, match="no measurements table"):
        research.measurements(tmp_path / "old.sqlite3")
    (tmp_path / "text.sqlite3").write_text("hello, not a database" * 50)
    with pytest.raises(research.ResearchError):
        research.measurements(tmp_path / "text.sqlite3")
