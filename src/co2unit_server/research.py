"""The CO2 units' and the gateway devices' data as pandas DataFrames, for researchers.

    from co2unit_server import research
    df = research.readings("var", units="co2unit-30aea42a50bc", start="2026-11-01",
                           end="2026-12-01")
    df.groupby("site")["co2_mean"].resample("1D").mean()

`db` is the database file (db.sqlite3), the directory holding it (the toolchain's DB_DIR,
e.g. `var/`), or an open `sqlite3.Connection`. Files are opened read-only: nothing here can
change the database. A missing file raises `DatabaseNotFoundError` (a `FileNotFoundError`);
bad arguments raise `ResearchError` (a `ValueError`).

Time: every time is UTC. The index `time` is a tz-aware UTC DatetimeIndex (microsecond
resolution). `start` and `end` take an ISO 8601 string ('2026-11-01', '2026-11-01T13:00:00',
with or without 'Z' or an offset such as '+02:00'), a `datetime` or `date` (naive means UTC) or
a `pandas.Timestamp`; `start` is inclusive, `end` exclusive, None leaves that side open. Rows
come sorted by unit_id, then time.

Missing values: NULL in the database is missing here, never 0: NaN in float columns, <NA> in the
integer columns (pandas nullable `Int64`), NaN in text columns (pandas `str`).

Columns of `readings()` (one row per reading the unit took, every 30 minutes by default):

    unit_id              hardware ID, e.g. co2unit-30aea42a50bc
    nickname             the nickname the unit wrote (missing when none was configured)
    temp                 temperature in °C; the sensor's fault value 85.0 is NaN
    flash_count          camera flashes since the last reading (Int64)
    co2_01 ... co2_10    the ten CO2 values of the reading in ppm, as stored (Int64)
    co2_mean             mean of those ten in ppm, leaving out missing values and the sensor's
                         start-up glitches 0 and 200010 ppm, exactly as the plots do; NaN when
                         none is left
    raw_co2_filtered     the ExplorIR sensor's raw read (Z, d, o, h, v; Int64), written by
    raw_led_normalized   firmware from 2020-01-14 on; missing for older 16-field rows and where
    raw_led_signal       the read failed
    raw_zero_point
    raw_sensor_temp

Columns of `pings()` (one row per alive ping the server received):

    unit_id, nickname    as above (nickname: the site_code the unit sent)
    rssi_raw             the modem's raw signal strength value, as sent (Int64)
    rssi_dbm             signal strength in dBm (Int64)
    ber_raw              the modem's raw bit error rate value, as sent (Int64)

Both end with the deployment the row was taken in, from the researchers' deployment table
(deploy_durations_tiered): a row at time t is in a period when start <= t < end (an empty start
means since always, an empty end still going); where a unit's periods overlap, the one that
started latest wins; outside every period these four are missing:

    deployment_nickname  the nickname the deployment table gives the unit
    site                 the site code, e.g. vj_re_sn_4
    tier                 the deployment's tier (Int64)
    status               deployed, en_route or lab_check

`co2unit-server export` writes the same tables as CSV or JSON for R and spreadsheets.

`measurements()` gives the values of the gateways' devices (TCP weather stations named
esp8266-<deviceID>, polled NodeMCUs named in pull_devices_file), one row per device and time,
one float column per value name, after a first column `device`:

    device               the device's name, e.g. esp8266-1
    light, humidity,     a TCP weather station's values: lx, %RH, °C, each record timed as
    temperature          docs/gateways.md says (back from the packet's receive time)
    mq135.co2, ...       a polled device's values, named <sensor>.<value> (mq135.co2 ppm,
                         bmp180.pressure hPa, dht22.humidity %RH, ds18b20.temperature °C, ...),
                         all at the poll's time

Columns are the names found (sorted); a name a device did not send at a time is NaN (a
partial poll, or another device's name). Rows come sorted by device, then time. A single
device is `df[df.device == "esp8266-1"]`; one value per device side by side is
`df.pivot(columns="device", values="temperature")`.

Streaming devices (family ws, named by their device_id) come in `measurements()` as well, a
column per value name they send. Their readings received during a session carry its id:
`measurements(db, session="s-20261206T015211Z-drill-3")` gives only those. `sessions()` lists
the sessions (one row each, oldest first):

    id                   s-<UTC start second>[-<name slug>], e.g. s-20261206T015211Z-drill-3
    name                 as the admin gave it (missing when none was)
    started_at           UTC, tz-aware
    stopped_at           UTC; NaT while the session runs
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd

from .database.measurement_store import MEASUREMENTS, measurement_batches
from .database.research_tables import PINGS, READINGS, batches
from .database.tables import (
    DatabaseNotFoundError,
    ResearchError,
    Table,
    TimeLike,
    connection,
)
from .records.sessions import listed

__all__ = ["DatabaseNotFoundError", "ResearchError", "measurements", "pings", "readings",
           "sessions"]

Units = str | Iterable[str] | None
Names = str | Iterable[str] | None


def readings(db: str | os.PathLike | sqlite3.Connection, units: Units = None,
             start: TimeLike = None, end: TimeLike = None) -> pd.DataFrame:
    """CO2 readings of `units` (a hw_id, several, or None: all) in [start, end), indexed by UTC
    time; the columns are described in the module's documentation."""
    return _frame(READINGS, db, units, start, end)


def pings(db: str | os.PathLike | sqlite3.Connection, units: Units = None,
          start: TimeLike = None, end: TimeLike = None) -> pd.DataFrame:
    """Alive pings of `units` (a hw_id, several, or None: all) in [start, end), indexed by UTC
    time; the columns are described in the module's documentation."""
    return _frame(PINGS, db, units, start, end)


def measurements(db: str | os.PathLike | sqlite3.Connection, devices: Units = None,
                 start: TimeLike = None, end: TimeLike = None, names: Names = None,
                 session: str | None = None) -> pd.DataFrame:
    """Values of gateway `devices` (a name, several, or None: all) in [start, end), of `names`
    (None: all), received during `session` (an id; None: any time), indexed by UTC time; a
    `device` column, then a column per name."""
    with connection(db) as conn:
        long = pd.DataFrame(_arrays(MEASUREMENTS, measurement_batches(
            conn, devices, start, end, names, session=session)))
    # (device, time) is unique per name: the table's key is (device, ts, name).
    wide = long.pivot(index=["device", "time"], columns="name", values="value")
    wide = wide.reset_index(level="device")
    wide.columns.name = None
    wide["device"] = wide["device"].astype("str")
    return wide


def sessions(db: str | os.PathLike | sqlite3.Connection) -> pd.DataFrame:
    """The streaming sessions, oldest first: id, name, started_at, stopped_at (UTC; NaT while
    it runs)."""
    with connection(db) as conn:
        rows = listed(conn)[::-1]
    return pd.DataFrame({
        "id": pd.array([s.id for s in rows], dtype="str"),
        "name": pd.array([s.name for s in rows], dtype="str"),
        "started_at": _times()(tuple(s.started_at for s in rows)),
        "stopped_at": _times()(tuple(s.stopped_at for s in rows))})


def _arrays(table: Table, rows: Iterable[list[tuple]]) -> dict[str, Any]:
    """A column array per column of the table, from batches of rows."""
    # Converted batch by batch: a year of 100 units as Python tuples would take gigabytes,
    # as arrays a few hundred megabytes.
    chunks: list[list] = [[] for _ in table.columns]
    converters = [_CONVERT[c.kind]() for c in table.columns]
    for batch in rows:
        columns = zip(*batch, strict=True)
        for chunk, convert, values in zip(chunks, converters, columns, strict=True):
            chunk.append(convert(values))
    return {c.name: _JOIN[c.kind](chunk) for c, chunk in zip(table.columns, chunks, strict=True)}


def _frame(table: Table, db: str | os.PathLike | sqlite3.Connection, units: Units,
           start: TimeLike, end: TimeLike) -> pd.DataFrame:
    with connection(db) as conn:
        data = _arrays(table, batches(conn, table, units, start, end))
    index = data.pop("time")
    return pd.DataFrame(data, index=pd.DatetimeIndex(index, name="time"))


def _times() -> Callable[[tuple], pd.DatetimeIndex]:
    return lambda values: pd.to_datetime(values, format="ISO8601", utc=True).as_unit("us")


def _ints() -> Callable[[tuple], tuple[np.ndarray, np.ndarray]]:
    """(values, missing mask) without going through floats."""
    def convert(values: tuple) -> tuple[np.ndarray, np.ndarray]:
        try:
            data = np.fromiter(values, np.int64, len(values))
            return data, np.zeros(len(values), bool)
        except TypeError:  # a None among them
            objects = np.array(values, dtype=object)
            missing = np.equal(objects, None)
            return np.where(missing, 0, objects).astype(np.int64), missing
    return convert


def _reals() -> Callable[[tuple], np.ndarray]:
    return lambda values: np.array(values, dtype=np.float64)  # None becomes NaN


def _texts() -> Callable[[tuple], np.ndarray]:
    # SQLite hands out a new str per row: keep one copy of each (unit ids, nicknames, sites).
    seen: dict[str, str] = {}
    return lambda values: np.array([v if v is None else seen.setdefault(v, v) for v in values],
                                   dtype=object)


_CONVERT: dict[str, Callable[[], Callable]] = {
    "time": _times, "int": _ints, "real": _reals, "text": _texts}


def _join_times(chunks: list[pd.DatetimeIndex]) -> pd.DatetimeIndex:
    if not chunks:
        return pd.DatetimeIndex([], dtype="datetime64[us, UTC]")
    return chunks[0].append(chunks[1:])


def _join_ints(chunks: list[tuple[np.ndarray, np.ndarray]]) -> pd.api.extensions.ExtensionArray:
    if not chunks:
        return pd.array([], dtype="Int64")
    data, missing = zip(*chunks, strict=True)
    return pd.arrays.IntegerArray(np.concatenate(data), np.concatenate(missing))


def _join_reals(chunks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(chunks) if chunks else np.array([], dtype=np.float64)


def _join_texts(chunks: list[np.ndarray]) -> pd.api.extensions.ExtensionArray:
    return pd.array(np.concatenate(chunks) if chunks else [], dtype="str")


_JOIN: dict[str, Callable[[list], object]] = {
    "time": _join_times, "int": _join_ints, "real": _join_reals, "text": _join_texts}
