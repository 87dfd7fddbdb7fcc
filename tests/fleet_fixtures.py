"""A small fleet in a database: a unit for each status, with pings, pushes and deployments.

Used by test_fleet_status, test_fleet_pages and test_api. Times are relative to `now`, so the
same fleet serves a fixed clock and the real server's.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from co2unit_server.core.timestamps import DAY, to_epoch
from co2unit_server.database import db
from co2unit_server.records.pinglog import INSERT_PING, Ping

NOW = to_epoch("2026-11-08 12:00:00")
HOUR = 3600.0
ALIVE = "co2unit-aaaaaaaaaaa1"  # deployed, pinged 2 h ago, pushing
LATE = "co2unit-bbbbbbbbbbb2"  # deployed, last ping 30 h ago
SILENT = "co2unit-ccccccccccc3"  # deployed, last ping 5 days ago
NEVER = "co2unit-ddddddddddd4"  # deployed, never pinged
UNKNOWN = "co2unit-eeeeeeeeeee5"  # pings, but in no deployment
LAB = "co2unit-fffffffffff6"  # back in the lab, silent: not a problem
STATUS_OF = {ALIVE: "alive", LATE: "late", SILENT: "silent", NEVER: "never seen",
             UNKNOWN: "unknown", LAB: "silent"}
# The alive unit's pings of the last 7 days (dBm), oldest first: median -81.
ALIVE_DBM = [-90, -85, -81, -80, -75]
# (unit, nickname, site, tier, status, start, end) of deploy_durations_tiered, as days from now.
DEPLOYMENTS = [
    (ALIVE, "varanger-01", "vj_re_sn_1", 2, "lab_check", -60, -40),
    (ALIVE, "varanger-01", "vj_re_sn_1", 2, "deployed", -40, None),
    (LATE, "varanger-02", "vj_re_sn_2", 1, "deployed", -40, None),
    (SILENT, "<b>varanger-03</b>", "vj_re_sn_3", 2, "deployed", -40, None),
    (NEVER, "varanger-04", "vj_re_sn_4", 3, "deployed", -3, None),
    (LAB, "varanger-06", None, None, "deployed", -40, -10),
    (LAB, "varanger-06", None, None, "lab_check", -10, None),
]
# (unit, days ago, bytes, chunks, error entries, hours ago of the last push, reading hours ago)
PUSHES = [
    (ALIVE, 9, 50_000, 13, 4, 9 * 24, 9 * 24 + 1),  # outside the 7-day window
    (ALIVE, 3, 8_000, 2, 1, 3 * 24, 3 * 24 + 1),
    (ALIVE, 0, 4_096, 1, 2, 2, 3),
    (SILENT, 5, 1_000, 1, 0, 5 * 24, None),
    (SILENT, 6, 2_000, 1, 0, 6 * 24, 6 * 24 + 2),
]


def text(epoch: float, sep: str = " ") -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime(f"%Y-%m-%d{sep}%H:%M:%S")


def ping(unit: str, hours_ago: float, now: float, dbm: int | None = -80,
         nickname: str | None = None) -> tuple:
    """A pings row as the server writes it."""
    ts = datetime.fromtimestamp(now - hours_ago * HOUR, UTC).replace(tzinfo=None)
    return Ping(ts, unit, nickname, 20, dbm, 99).db_row()


def fleet_pings(now: float) -> list[tuple]:
    rows = [ping(ALIVE, 24 * (4 - i) + 2, now, dbm) for i, dbm in enumerate(ALIVE_DBM)]
    rows += [ping(ALIVE, 24 * 20, now, -113), ping(LATE, 30, now, None),
             ping(SILENT, 5 * 24, now, -100), ping(UNKNOWN, 1, now, -70, "stray"),
             ping(LAB, 12 * 24, now, -90)]
    return rows


def build_fleet(db_path: Path, now: float = NOW) -> sqlite3.Connection:
    """The fleet's rows in the database at db_path (created), relative to `now`."""
    conn = db.connect(db_path)
    db.init_schema(conn)
    conn.executemany(INSERT_PING, fleet_pings(now))
    conn.executemany(
        "INSERT INTO deploy_durations_tiered VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
        [(u, n, s, t, st, text(now + a * DAY), None if b is None else text(now + b * DAY))
         for u, n, s, t, st, a, b in DEPLOYMENTS])
    conn.executemany(db.UPSERT_PUSH_DAILY, [
        (u, text(now - d * DAY)[:10], size, chunks, errors, text(now - p * HOUR, "T"),
         None if r is None else text(now - r * HOUR)) for u, d, size, chunks, errors, p, r
        in PUSHES])
    return conn


# --- the gateways' devices: a device for each status, relative to `now` like the units

TCP_ALIVE = "esp8266-1"  # wakes hourly, last packet 1 h ago
TCP_LATE = "esp8266-2"  # last packet 3 h ago: late after 2 h, silent after 5.5 h
TCP_SILENT = "esp8266-3"  # last packet 10 h ago
TCP_RETIRED = "esp8266-4"  # silent for 40 days: no longer watched
TCP_BAD = "esp8266-unidentified"  # only bad packets: never seen
PULL_ALIVE = "lab-1"  # polled every 60 s, answered a minute ago
PULL_FAILING = "lab-2"  # listed, never answered
PULL_NEW = "lab-3"  # listed, not polled yet
PULL_GONE = "old-1"  # answered, then left the devices file
DEVICE_STATUS = {TCP_ALIVE: "alive", TCP_LATE: "late", TCP_SILENT: "silent",
                 TCP_RETIRED: "silent", TCP_BAD: "never seen", PULL_ALIVE: "alive",
                 PULL_FAILING: "never seen", PULL_NEW: "never seen", PULL_GONE: "unknown"}
PULL_DEVICES_TSV = ("# name\tURL\tinterval s\n"
                    f"{PULL_ALIVE}\thttp://10.0.0.9/circumstances\t60\n"
                    f"{PULL_FAILING}\thttp://10.0.0.10/circumstances\t60\n"
                    f"{PULL_NEW}\thttp://10.0.0.11/circumstances\t120\n"
                    "broken line without tabs\n")
# (device, family, hours ago, verdict, values stored, expected_s, detail)
RECEIPTS = [
    (TCP_ALIVE, "tcp", 2.0, "ok", 3, 3600.0, None),
    (TCP_ALIVE, "tcp", 1.5, "bad", 0, None, "12 bytes, but the header announces 9 + 6"),
    (TCP_ALIVE, "tcp", 1.0, "ok", 3, 3600.0, None),
    (TCP_LATE, "tcp", 3.0, "unknown", 0, 3600.0, "no record format for deviceID 2"),
    (TCP_SILENT, "tcp", 10.0, "ok", 3, 3600.0, None),
    (TCP_RETIRED, "tcp", 40 * 24.0, "ok", 3, 3600.0, None),
    (TCP_BAD, "tcp", 1.0, "bad", 0, None, "2 bytes: shorter than the 9-byte header"),
    (PULL_ALIVE, "pull", 10 * 24.0, "ok", 2, None, None),  # outside the 7-day window
    (PULL_ALIVE, "pull", 0.05, "failed", 0, None, "connection refused"),
    (PULL_ALIVE, "pull", 1 / 60, "ok", 2, None, None),
    (PULL_ALIVE, "pull", 0.5 / 60, "partial", 1, None, "dht22.humidity is 'nan'"),
    (PULL_FAILING, "pull", 0.02, "failed", 0, None, "connection refused"),
    (PULL_GONE, "pull", 48.0, "ok", 1, None, None),
]
# (device, family, hours ago, name, value): the newest of each name is the device's last value.
VALUES = [
    (TCP_ALIVE, "tcp", 2.2, "light", 1200.0), (TCP_ALIVE, "tcp", 2.2, "humidity", 50.0),
    (TCP_ALIVE, "tcp", 2.2, "temperature", 20.0),
    (TCP_ALIVE, "tcp", 1.2, "light", 1234.0), (TCP_ALIVE, "tcp", 1.2, "humidity", 54.997),
    (TCP_ALIVE, "tcp", 1.2, "temperature", 21.501),
    (TCP_SILENT, "tcp", 10.2, "temperature", -3.25),
    (TCP_RETIRED, "tcp", 40 * 24.0, "temperature", 11.0),
    (PULL_ALIVE, "pull", 10 * 24.0, "mq135.co2", 399.0),
    (PULL_ALIVE, "pull", 1 / 60, "mq135.co2", 402.08),
    (PULL_ALIVE, "pull", 1 / 60, "dht22.humidity", 47.3),
    (PULL_ALIVE, "pull", 0.5 / 60, "mq135.co2", 410.0),
    (PULL_GONE, "pull", 48.0, "bmp180.pressure", 1006.13),
]


def ts_at(now: float, hours_ago: float) -> str:
    """The gateway tables' UTC text of a time."""
    return datetime.fromtimestamp(now - hours_ago * HOUR, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def build_devices(conn: sqlite3.Connection, pull_devices: Path, now: float = NOW) -> Path:
    """The devices' receipts and values in the database, and the pull devices file."""
    conn.executemany(db.INSERT_RECEIPT, [
        (f"{family}/{device}/0000.log:{i}", device, family, ts_at(now, hours), verdict, stored,
         expected, detail)
        for i, (device, family, hours, verdict, stored, expected, detail) in enumerate(RECEIPTS)])
    conn.executemany(db.INSERT_MEASUREMENT, [
        (device, family, ts_at(now, hours), name, value, f"{family}/{device}/0000.log:1", None)
        for device, family, hours, name, value in VALUES])
    pull_devices.write_text(PULL_DEVICES_TSV)
    return pull_devices
